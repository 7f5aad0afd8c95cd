"""The channel-aware encoder: shapes, invariance to padding and channel order, use of
positions, channel subsets, and the optional classification head learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modal_core_eeg.encoder import EEGAdapter, EEGClassifier, EEGPatchEncoder
from modal_core_eeg.options import EEGOptions
from modal_core_eeg.processor import EEGProcessor
from modal_core_eeg.simulate import CLASSES, simulate_recording

OPTIONS = EEGOptions(max_channels=24, patch_samples=64, queries_per_patch=3, width=32, num_heads=2)


@pytest.fixture(scope="module")
def recording():
    return simulate_recording(CLASSES[0], 2.0, np.random.default_rng(0))


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return EEGPatchEncoder.from_options(OPTIONS).eval()


def _payload(raw, **changes) -> torch.Tensor:
    return EEGProcessor(EEGOptions(**{**OPTIONS.__dict__, **changes}))(raw).unsqueeze(0)


def test_shapes_follow_the_options(encoder, recording, eeg_plugins):
    features = encoder.encode(_payload(recording))
    spec = eeg_plugins.modality("eeg")
    assert features.shape == (1, 4 * 3, 32) == (1, spec.num_positions(OPTIONS), OPTIONS.width)
    assert EEGAdapter(32, 48, depth=2)(features).shape == (1, 12, 48)


def test_padding_slots_change_nothing(encoder, recording):
    with torch.no_grad():
        tight = encoder.encode(_payload(recording, max_channels=19))
        padded = encoder.encode(_payload(recording, max_channels=64))
    torch.testing.assert_close(tight, padded, atol=1e-5, rtol=1e-5)


def test_channel_order_changes_nothing(encoder, recording):
    payload = _payload(recording)
    order = torch.randperm(19, generator=torch.Generator().manual_seed(1))
    shuffled = payload.clone()
    shuffled[0, :19] = payload[0, order]
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode(payload), encoder.encode(shuffled), atol=1e-5, rtol=1e-5)


def test_positions_matter(encoder, recording):
    payload = _payload(recording)
    mirrored = payload.clone()
    mirrored[0, :19, 1] *= -1  # swap left and right hemispheres
    with torch.no_grad():
        assert (encoder.encode(payload) - encoder.encode(mirrored)).abs().max() > 1e-3


def test_fewer_channels_of_the_same_recording_still_encode(encoder, recording):
    subset = recording.copy().pick(["Fp1", "Fp2", "C3", "C4", "O1", "O2"])
    with torch.no_grad():
        full, reduced = encoder.encode(_payload(recording)), encoder.encode(_payload(subset))
    assert reduced.shape == full.shape and torch.isfinite(reduced).all()
    assert _payload(subset)[0, :, 0].sum() == 6
    # The six kept channels carry exactly the full recording's signals for those names.
    full_payload, subset_payload = _payload(recording, reference="none"), _payload(subset, reference="none")
    kept = [recording.ch_names.index(name) for name in subset.ch_names]
    torch.testing.assert_close(subset_payload[0, :6], full_payload[0, kept])


def test_gradients_reach_every_encoder_parameter(recording):
    encoder = EEGPatchEncoder.from_options(OPTIONS)
    encoder.encode(_payload(recording)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_classification_head_gives_logits_and_trains_its_encoder(recording):
    model = EEGClassifier(EEGPatchEncoder.from_options(OPTIONS), num_classes=6)
    payload = torch.cat([_payload(recording), _payload(recording.copy().pick(["C3", "C4", "Cz", "Pz"]))])
    logits = model(payload)
    assert logits.shape == (2, 6)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert model.encoder.patch_embedding.project.weight.grad.abs().sum() > 0
