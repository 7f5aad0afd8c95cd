"""How a model draws when a call does not say: the guidance and sampling settings a
recipe's `generation:` section stores in every checkpoint, a call's overrides, and the
checks of each setting. Imports no torch (the command line and the server read it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from modal_core.errors import ModelInputError

MAX_TEMPERATURE = 10.0
"""Beyond this, sampling is uniform noise for any trained model: surely a typo."""
MAX_CFG_SCALE = 100.0
"""Guidance scales used in practice are 1-10; far larger ones only amplify noise."""
GUIDANCE_SCHEDULES = ("constant", "linear")
"""How the guidance scale runs over an item's codes (see `sampling.Guidance`)."""
OFF_VALUES = {"top_k": 0, "top_p": 1.0, "cfg_plausibility": 0.0}
"""An override with this value turns its filter off (None means "the model's default")."""


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Reject sampling settings that have no meaning."""
    if not (isinstance(temperature, (int, float)) and 0 <= temperature <= MAX_TEMPERATURE):
        raise ModelInputError(f"temperature must be a number in [0, {MAX_TEMPERATURE:g}] (0 = greedy), got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise ModelInputError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ModelInputError(f"top_p must be in (0, 1], got {top_p}")


def check_guidance(scale: float, schedule: str = "constant", plausibility: float | None = None) -> None:
    """Reject a classifier-free guidance scale outside [0, MAX_CFG_SCALE] (or not a number),
    an unknown schedule, or a plausibility outside (0, 1]."""
    if not (isinstance(scale, (int, float)) and 0 <= scale <= MAX_CFG_SCALE):
        raise ModelInputError(f"cfg scale must be a number in [0, {MAX_CFG_SCALE:g}] (1 = no guidance), got {scale!r}")
    if schedule not in GUIDANCE_SCHEDULES:
        raise ModelInputError(f"cfg schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}")
    if plausibility is not None and not (isinstance(plausibility, (int, float)) and 0 < plausibility <= 1):
        raise ModelInputError(f"cfg plausibility must be a number in (0, 1] or None, got {plausibility!r}")


@dataclass(frozen=True)
class GenerationSettings:
    """Classifier-free guidance and sampling of an output modality.

    `cfg` (scale), `cfg_schedule` and `cfg_plausibility`: see `sampling.Guidance`;
    `temperature` (0 = greedy), `top_k` and `top_p`: see `sampling.sample_tokens`.
    The defaults are Janus's (constant guidance 5, plain sampling)."""

    cfg: float = 5.0
    cfg_schedule: str = "constant"
    cfg_plausibility: float | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    @classmethod
    def from_mapping(cls, values: Any) -> GenerationSettings:
        """Settings from a recipe's `generation` section (a mapping of these keys); checked."""
        settings = cls(**{key: values[key] for key in asdict(cls()) if key in values})
        settings.check()
        return settings

    def with_overrides(self, **overrides: Any) -> GenerationSettings:
        """These settings with a call's values: None keeps the setting; `top_k=0`,
        `top_p=1` and `cfg_plausibility=0` turn that filter off. Checked."""
        unknown = sorted(set(overrides) - set(asdict(self)))
        if unknown:
            raise TypeError(f"unknown generation settings {unknown}; known: {sorted(asdict(self))}")
        given = {key: value for key, value in overrides.items() if value is not None}
        settings = replace(self, **{key: None if OFF_VALUES.get(key) == value else value for key, value in given.items()})
        settings.check()
        return settings

    @property
    def sampling(self) -> tuple[float, int | None, float | None]:
        """(temperature, top_k, top_p), as the decode loops take them."""
        return self.temperature, self.top_k, self.top_p

    def check(self) -> None:
        """Reject settings that have no meaning, naming the setting."""
        check_guidance(self.cfg, self.cfg_schedule, self.cfg_plausibility)
        check_sampling(*self.sampling)

    def as_dict(self) -> dict[str, Any]:
        """The settings by name (e.g. for a metrics file)."""
        return asdict(self)

    def as_overrides(self) -> dict[str, Any]:
        """Keyword arguments of `Pipeline.generate` that draw with exactly these settings
        whatever the model's defaults: a filter that is off is passed as its off value."""
        return {key: OFF_VALUES[key] if value is None else value for key, value in asdict(self).items()}
