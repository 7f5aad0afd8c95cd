"""The point-patch encoder: FPS and kNN against brute force, shapes, values,
determinism, permutation invariance, rotations, batching, and the adapter."""

from __future__ import annotations

import pytest
import torch

from modal_core.errors import ModelInputError
from modal_core_point_cloud.encoder import MiniPointNet, PointPatchEncoder, build_adapter, farthest_point_sample, gather, knn_indices

from .helpers import brute_force_fps, brute_force_knn, random_rotation


def _clouds(batch: int = 3, points: int = 96, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, points, channels, generator=torch.Generator().manual_seed(seed))


def _encoder(seed: int = 0, **sizes) -> PointPatchEncoder:
    torch.manual_seed(seed)
    settings = {"channels": 3, "num_patches": 8, "neighbours": 6, "pointnet_width": 16, "width": 32, "num_layers": 1, "num_heads": 2}
    return PointPatchEncoder(**{**settings, **sizes}).eval()


def test_fps_matches_brute_force_per_item():
    clouds = _clouds()
    indices = farthest_point_sample(clouds, 10)
    assert indices.shape == (3, 10)
    for item in range(3):
        assert indices[item].tolist() == brute_force_fps(clouds[item].double().numpy(), 10)


def test_knn_matches_brute_force():
    clouds = _clouds(points=50)
    centres = gather(clouds, farthest_point_sample(clouds, 4))  # (3, 4, 3)
    neighbours = knn_indices(clouds, centres, 7)
    assert neighbours.shape == (3, 4, 7)
    for item in range(3):
        for g in range(4):
            reference = brute_force_knn(clouds[item].double().numpy(), centres[item, g].double().numpy(), 7)
            assert neighbours[item, g].tolist() == reference
            assert neighbours[item, g, 0] == farthest_point_sample(clouds, 4)[item, g]  # a centre is its own nearest point


def test_group_returns_centres_and_relative_patches():
    encoder = _encoder()
    clouds = _clouds(channels=3)
    centres, patches = encoder.group(clouds)
    assert centres.shape == (3, 8, 3) and patches.shape == (3, 8, 6, 3)
    # The nearest point of each patch is its centre: relative coordinates zero.
    torch.testing.assert_close(patches[:, :, 0], torch.zeros(3, 8, 3))
    index = knn_indices(clouds, centres, 6)
    torch.testing.assert_close(patches, gather(clouds, index) - centres.unsqueeze(2))


def test_encoder_output_shape_and_extra_channels_carried():
    encoder = _encoder(channels=9)
    clouds = _clouds(channels=9)
    tokens = encoder.encode(clouds)
    assert tokens.shape == (3, 8, 32) and torch.isfinite(tokens).all()
    _, patches = encoder.group(clouds)
    index = knn_indices(clouds[..., :3], gather(clouds[..., :3], farthest_point_sample(clouds[..., :3], 8)), 6)
    torch.testing.assert_close(patches[..., 3:], gather(clouds, index)[..., 3:])  # normals/colours unchanged
    # Changing only a colour channel changes the tokens: the extra channels are used.
    changed = clouds.clone()
    changed[..., 8] += 1.0
    assert not torch.allclose(encoder.encode(changed), tokens)


def test_encoder_matches_a_manual_computation():
    encoder = _encoder(num_layers=0)
    clouds = _clouds()
    centres, patches = encoder.group(clouds)
    pointnet = encoder.patch_embed
    local = pointnet.first(patches)
    pooled = local.max(dim=2, keepdim=True).values.expand_as(local)
    patch_tokens = pointnet.second(torch.cat([pooled, local], dim=-1)).max(dim=2).values
    expected = encoder.norm(patch_tokens + encoder.position_embed(centres))
    torch.testing.assert_close(encoder.encode(clouds), expected)


def test_encoder_is_deterministic_for_a_seed():
    clouds = _clouds()
    first, again, other = _encoder(seed=5), _encoder(seed=5), _encoder(seed=6)
    torch.testing.assert_close(first.encode(clouds), again.encode(clouds), rtol=0, atol=0)
    assert not torch.allclose(first.encode(clouds), other.encode(clouds))


def test_mini_pointnet_is_invariant_to_the_order_within_a_patch():
    torch.manual_seed(0)
    pointnet = MiniPointNet(3, 16, 32)
    patches = torch.randn(2, 5, 9, 3)
    shuffled = patches[:, :, torch.randperm(9)]
    torch.testing.assert_close(pointnet(shuffled), pointnet(patches))


def test_encoder_is_invariant_to_the_order_of_the_input_points():
    encoder = _encoder()
    clouds = _clouds()
    permuted = clouds[:, torch.randperm(clouds.shape[1], generator=torch.Generator().manual_seed(1))]
    torch.testing.assert_close(encoder.encode(permuted), encoder.encode(clouds))


def test_rotated_input_runs_and_moves_the_centres_with_it():
    encoder = _encoder()
    clouds = _clouds()
    rotation = random_rotation(torch.Generator().manual_seed(2))
    rotated = clouds @ rotation.T
    tokens = encoder.encode(rotated)
    assert tokens.shape == (3, 8, 32) and torch.isfinite(tokens).all()
    # FPS and kNN use distances only, so the rotated cloud's centres are the rotated centres.
    centres, _ = encoder.group(clouds)
    rotated_centres, _ = encoder.group(rotated)
    torch.testing.assert_close(rotated_centres, centres @ rotation.T, atol=1e-5, rtol=1e-5)


def test_batched_equals_one_by_one():
    encoder = _encoder()
    clouds = _clouds(batch=4)
    together = encoder.encode(clouds)
    for item in range(4):
        torch.testing.assert_close(encoder.encode(clouds[item : item + 1])[0], together[item], atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    encoder = _encoder().train()
    encoder.encode(_clouds()).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


@pytest.mark.parametrize(
    "payload, message",
    [
        (torch.randn(2, 96), r"shape \(2, 96\); expected \(n, P, 3\)"),
        (torch.randn(2, 96, 6), r"shape \(2, 96, 6\); expected \(n, P, 3\)"),
        (torch.randn(2, 5, 3), "has 5 points; need at least num_patches=8"),
        (torch.full((2, 96, 3), float("nan")), "NaN or infinite"),
    ],
)
def test_bad_payloads_are_named(payload, message):
    with pytest.raises(ModelInputError, match=message):
        _encoder().encode(payload)


def test_adapter_is_a_gelu_mlp():
    torch.manual_seed(0)
    adapter = build_adapter(32, 48, depth=2)
    tokens = torch.randn(2, 8, 32)
    first, second = adapter[0], adapter[2]
    expected = second(torch.nn.functional.gelu(first(tokens)))
    torch.testing.assert_close(adapter(tokens), expected)
    assert adapter(tokens).shape == (2, 8, 48)
    assert len(build_adapter(32, 48, depth=1)) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    encoder = _encoder()
    clouds = _clouds()
    expected = encoder.encode(clouds)
    torch.testing.assert_close(encoder.cuda().encode(clouds.cuda()).cpu(), expected, atol=1e-4, rtol=1e-4)
