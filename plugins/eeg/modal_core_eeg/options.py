"""Recipe options of `modalities.eeg`: preprocessing, windowing and encoder sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from modal_core.errors import RecipeError

HEADER = 4
"""Leading columns of a payload row: valid flag and x, y, z."""

FLAT_POLICIES = ("drop", "interpolate", "raise")
UNKNOWN_CHANNEL_POLICIES = ("drop", "raise")


@dataclass
class EEGOptions:
    """Recipe options of `modalities.eeg`."""

    sfreq: float = 128.0
    """Sampling rate in Hz every recording is resampled to; recordings slower than this are refused."""
    window_seconds: float = 2.0
    """Length of one item (a window or an epoch) in seconds."""
    window_start: float = 0.0
    """Where the processor cuts the window out of a longer recording, in seconds from its start."""
    l_freq: Optional[float] = 1.0
    """High-pass edge of the band-pass filter in Hz (null: no high-pass)."""
    h_freq: Optional[float] = 45.0
    """Low-pass edge of the band-pass filter in Hz (null: no low-pass); must be below sfreq / 2."""
    notch_freqs: list[float] = field(default_factory=lambda: [50.0])
    """Line-noise frequencies removed by a notch filter (50 Hz in Europe, 60 Hz in the Americas)."""
    reference: str = "average"
    """`average` (common average reference), `none` (keep the recorded one), or a channel name."""
    montage: str = "standard_1020"
    """mne standard montage giving positions to channels that have none in the file."""
    unknown_channels: str = "raise"
    """EEG channels the montage does not know and the file gives no position for: `raise` or `drop`."""
    flat_channels: str = "drop"
    """Flat channels (std below `flat_microvolts`): `drop`, `interpolate` (spherical spline) or `raise`."""
    flat_microvolts: float = 0.1
    """A channel whose standard deviation is below this many microvolts counts as flat."""
    min_channels: int = 4
    """Fewest usable EEG channels a recording must keep after repairs."""
    max_channels: int = 64
    """Channel slots of one payload; recordings with more channels are refused."""
    scale_microvolts: float = 20.0
    """Signals are divided by this amplitude before encoding (amplitude stays informative)."""
    patch_samples: int = 32
    """Samples per temporal patch (at `sfreq`); the window must be a whole number of patches."""
    width: int = 64
    """Feature width of the encoder."""
    encoder_layers: int = 0
    """Transformer layers mixing all channel-patch tokens before pooling (0: none; the LM mixes time)."""
    num_heads: int = 4
    """Attention heads of the encoder."""
    queries_per_patch: int = 2
    """Learned queries pooling the channels of one time patch; positions = patches x queries."""
    adapter_depth: int = 2
    """Linear layers of the adapter MLP (GELU between), as Janus's understanding aligner."""

    @property
    def window_samples(self) -> int:
        """Samples in one window at `sfreq`."""
        return round(self.sfreq * self.window_seconds)

    @property
    def payload_shape(self) -> tuple[int, int]:
        """One recording's payload: a row per channel slot, the header then the window's samples."""
        return (self.max_channels, HEADER + self.window_samples)

    @property
    def num_patches(self) -> int:
        """Temporal patches per window."""
        return self.window_samples // self.patch_samples


def validate_options(options: EEGOptions) -> EEGOptions:
    """Check the options that depend on each other; a `RecipeError` names the key."""
    where = "modalities.eeg"
    if options.sfreq <= 0 or options.window_seconds <= 0:
        raise RecipeError(f"{where}: sfreq and window_seconds must be positive, got {options.sfreq} and {options.window_seconds}")
    if options.window_samples % options.patch_samples:
        raise RecipeError(
            f"{where}.patch_samples: the window has {options.window_samples} samples "
            f"(sfreq x window_seconds), not a multiple of patch_samples={options.patch_samples}"
        )
    nyquist = options.sfreq / 2
    if options.h_freq is not None and options.h_freq >= nyquist:
        raise RecipeError(f"{where}.h_freq: {options.h_freq} Hz must be below sfreq / 2 = {nyquist} Hz")
    if options.l_freq is not None and options.h_freq is not None and options.l_freq >= options.h_freq:
        raise RecipeError(f"{where}.l_freq: {options.l_freq} Hz must be below h_freq = {options.h_freq} Hz")
    if options.flat_channels not in FLAT_POLICIES:
        raise RecipeError(f"{where}.flat_channels: expected one of {FLAT_POLICIES}, got {options.flat_channels!r}")
    if options.unknown_channels not in UNKNOWN_CHANNEL_POLICIES:
        raise RecipeError(f"{where}.unknown_channels: expected one of {UNKNOWN_CHANNEL_POLICIES}, got {options.unknown_channels!r}")
    if not 1 <= options.min_channels <= options.max_channels:
        raise RecipeError(f"{where}: need 1 <= min_channels <= max_channels, got {options.min_channels} and {options.max_channels}")
    if options.width % options.num_heads:
        raise RecipeError(f"{where}.num_heads: width {options.width} is not divisible by {options.num_heads} heads")
    return options
