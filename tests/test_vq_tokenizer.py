"""VQ image tokenizer: quantisation, Janus weight compatibility, training behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from transformers import JanusVQVAEConfig
from transformers.models.janus.modeling_janus import JanusVQVAE

from modal_core.evaluation.metrics import codebook_usage, psnr
from modal_core_images.processing import image_to_tensor
from modal_core_vq_generation.tokenizer import VQImageTokenizer, VQOutput

SMALL = dict(
    image_size=16,
    codebook_size=32,
    code_dim=4,
    base_channels=32,
    channel_multiplier=(1, 2),
    num_res_blocks=1,
    latent_channels=32,
)


@pytest.fixture
def tokenizer() -> VQImageTokenizer:
    torch.manual_seed(0)
    return VQImageTokenizer(**SMALL)


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_encode_decode_shapes_and_code_range(tokenizer: VQImageTokenizer, pixels: torch.Tensor) -> None:
    codes = tokenizer.encode(pixels)
    images = tokenizer.decode(codes)

    assert tokenizer.grid_size == 8 and tokenizer.num_tokens == 64 and tokenizer.downsample_factor == 2
    assert tokenizer.codebook_size == 32 and tokenizer.code_dim == 4
    assert codes.shape == (3, 64) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 32
    assert images.shape == (3, 3, 16, 16)


def test_sixteen_times_downsampling_sets_janus_num_patches() -> None:
    tokenizer = VQImageTokenizer(**{**SMALL, "image_size": 64, "channel_multiplier": (1, 1, 2, 2, 4)})

    assert tokenizer.downsample_factor == 16 and tokenizer.grid_size == 4
    # JanusVQVAE.decode reshapes tokens to num_patches x num_patches.
    assert tokenizer.vq.config.num_patches == 4
    codes = tokenizer.encode(torch.zeros(2, 3, 64, 64))
    assert codes.shape == (2, 16) and tokenizer.vq.decode(codes).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("l2_normalize", [True, False])
def test_encode_matches_explicit_nearest_neighbour(pixels: torch.Tensor, l2_normalize: bool) -> None:
    torch.manual_seed(0)
    tokenizer = VQImageTokenizer(**SMALL, l2_normalize=l2_normalize)

    codes = tokenizer.encode(pixels)

    with torch.no_grad():
        latents = tokenizer.vq.quant_conv(tokenizer.vq.encoder(pixels))  # (B, D, h, w)
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, tokenizer.code_dim)
        codebook = tokenizer.vq.quantize.embedding.weight
        if l2_normalize:
            vectors = vectors / vectors.norm(dim=1, keepdim=True)
            codebook = codebook / codebook.norm(dim=1, keepdim=True)
        distances = ((vectors[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
        expected = distances.argmin(dim=1).view(pixels.shape[0], -1)
    assert torch.equal(codes, expected)


def test_decode_of_encode_equals_forward_reconstruction(tokenizer: VQImageTokenizer, pixels: torch.Tensor) -> None:
    tokenizer.eval()
    with torch.no_grad():
        output = tokenizer(pixels)
        decoded = tokenizer.decode(tokenizer.encode(pixels))

    assert isinstance(output, VQOutput)
    assert torch.equal(output.codes, tokenizer.encode(pixels))
    assert torch.allclose(decoded, output.reconstruction, atol=1e-5)


def test_decode_agrees_with_transformers_janus_decode(tokenizer: VQImageTokenizer, pixels: torch.Tensor) -> None:
    codes = tokenizer.encode(pixels)

    with torch.no_grad():
        ours = tokenizer.decode(codes)
        theirs = tokenizer.vq.decode(codes)

    assert torch.allclose(ours, theirs, atol=1e-6)


def test_weights_are_key_compatible_with_janus_vqvae(tokenizer: VQImageTokenizer, pixels: torch.Tensor) -> None:
    config = JanusVQVAEConfig(
        embed_dim=4,
        num_embeddings=32,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=(1, 2),
        num_res_blocks=1,
        num_patches=8,
    )
    janus = JanusVQVAE(config)

    assert list(tokenizer.vq.state_dict()) == list(janus.state_dict())

    janus.load_state_dict(tokenizer.vq.state_dict(), strict=True)
    codes = tokenizer.encode(pixels)
    with torch.no_grad():
        assert torch.allclose(janus.decode(codes), tokenizer.decode(codes), atol=1e-6)


def test_gradients_reach_encoder_decoder_and_used_codes(tokenizer: VQImageTokenizer, pixels: torch.Tensor) -> None:
    losses = tokenizer.loss(pixels)
    losses["loss"].backward()

    encoder_grad = tokenizer.vq.encoder.conv_in.weight.grad
    decoder_grad = tokenizer.vq.decoder.conv_out.weight.grad
    codebook_grad = tokenizer.vq.quantize.embedding.weight.grad
    assert encoder_grad is not None and encoder_grad.abs().sum() > 0, "straight-through path is broken"
    assert decoder_grad is not None and decoder_grad.abs().sum() > 0
    used = torch.zeros(tokenizer.codebook_size, dtype=torch.bool)
    used[tokenizer.encode(pixels).unique()] = True
    row_has_grad = codebook_grad.abs().sum(dim=1) > 0
    assert torch.equal(row_has_grad, used), "exactly the selected codebook rows should receive gradient"


def test_loss_terms_combine_with_weights(tokenizer: VQImageTokenizer, pixels: torch.Tensor) -> None:
    with torch.no_grad():
        losses = tokenizer.loss(pixels, recon_weight_l1=2.0, recon_weight_l2=0.5)
        output = tokenizer(pixels)

    assert set(losses) == {"loss", "recon_l1", "recon_l2", "codebook", "commitment", "psnr", "codebook_usage"}
    assert losses["psnr"] == pytest.approx(psnr(pixels, output.reconstruction))
    assert losses["codebook_usage"] == pytest.approx(codebook_usage(output.codes, tokenizer.codebook_size))
    expected = 2.0 * losses["recon_l1"] + 0.5 * losses["recon_l2"] + losses["codebook"] + losses["commitment"]
    assert torch.allclose(losses["loss"], expected)
    assert torch.allclose(losses["recon_l2"], F.mse_loss(output.reconstruction, pixels))
    # Same distance, one scaled by beta: commitment = 0.25 * codebook.
    assert torch.allclose(losses["commitment"], 0.25 * losses["codebook"])


def test_tokenizer_starts_in_training_mode(tokenizer: VQImageTokenizer) -> None:
    # JanusVQVAE.__init__ calls self.eval(); the wrapper must not inherit that.
    assert tokenizer.training and tokenizer.vq.training and tokenizer.vq.decoder.training


def test_wrong_inputs_are_rejected(tokenizer: VQImageTokenizer) -> None:
    with pytest.raises(ValueError, match="shape"):
        tokenizer.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        tokenizer.decode(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="codes must lie"):
        tokenizer.decode(torch.full((1, 64), 32, dtype=torch.long))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(image_size=15), "multiple of the downsampling factor"),
        (dict(base_channels=24), "positive multiple of 32"),
        (dict(channel_multiplier=()), "at least one level"),
        (dict(commitment_beta=-1.0), "non-negative"),
    ],
)
def test_invalid_configuration_is_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VQImageTokenizer(**{**SMALL, **overrides})


def test_codebook_usage_counts_distinct_codes() -> None:
    assert codebook_usage(torch.tensor([[0, 0, 3], [3, 5, 5]]), codebook_size=8) == 3 / 8
    with pytest.raises(ValueError):
        codebook_usage(torch.tensor([8]), codebook_size=8)


def test_psnr_of_known_error() -> None:
    reference = torch.zeros(2, 3, 4, 4)

    assert psnr(reference, reference) == math.inf
    # MSE 0.04 on a peak-to-peak range of 2: 10 * log10(4 / 0.04) = 20 dB.
    assert psnr(reference, torch.full_like(reference, 0.2)) == pytest.approx(20.0)
    # Values beyond [-1, 1] are clamped before comparison.
    assert psnr(torch.ones(1, 3, 2, 2), torch.full((1, 3, 2, 2), 5.0)) == math.inf


def _synthetic_shapes(count: int, size: int, seed: int) -> torch.Tensor:
    """Images of coloured rectangles and ellipses on coloured backgrounds, in [-1, 1]."""
    rng = np.random.default_rng(seed)

    def colour() -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    images = []
    for _ in range(count):
        image = Image.new("RGB", (size, size), colour())
        draw = ImageDraw.Draw(image)
        for _ in range(2):
            x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
            x1, y1 = (int(v) for v in rng.integers(size // 4, size // 2, 2))
            box = [x0, y0, x0 + x1, y0 + y1]
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour())
        images.append(image_to_tensor(image, size))
    return torch.stack(images)


@pytest.mark.slow
@pytest.mark.parametrize(("architecture", "lr"), [("janus", 1e-3), ("compact", 3e-3)])
def test_short_training_run_improves_reconstruction(architecture: str, lr: float) -> None:
    torch.manual_seed(0)
    tokenizer = VQImageTokenizer(
        image_size=32,
        codebook_size=64,
        code_dim=8,
        base_channels=32,
        channel_multiplier=(1, 1, 2),
        num_res_blocks=1,
        latent_channels=32,
        architecture=architecture,
    )
    images = _synthetic_shapes(8, 32, seed=0)
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=lr)
    with torch.no_grad():
        psnr_before = psnr(images, tokenizer(images).reconstruction)

    for _ in range(100):
        optimizer.zero_grad()
        tokenizer.loss(images)["loss"].backward()
        optimizer.step()

    with torch.no_grad():
        output = tokenizer(images)
    psnr_after = psnr(images, output.reconstruction)
    used = codebook_usage(output.codes, tokenizer.codebook_size) * tokenizer.codebook_size
    assert psnr_after >= psnr_before + 5.0, f"PSNR {psnr_before:.1f} -> {psnr_after:.1f} dB"
    assert used > 1, f"only {used:.0f} code(s) in use"


def test_compact_architecture_shares_the_quantiser_and_grid() -> None:
    torch.manual_seed(0)
    tokenizer = VQImageTokenizer(
        image_size=32,
        codebook_size=16,
        code_dim=4,
        base_channels=8,
        channel_multiplier=(1, 1, 1, 1),
        latent_channels=8,
        architecture="compact",
    )
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    codes = tokenizer.encode(pixels)
    assert codes.shape == (3, 16) and tokenizer.grid_size == 4
    output = tokenizer(pixels)
    assert torch.equal(output.codes, codes)
    torch.testing.assert_close(tokenizer.decode(codes), output.reconstruction)
    latents = tokenizer._latents(pixels)
    codebook = torch.nn.functional.normalize(tokenizer.vq.quantize.embedding.weight, dim=-1)
    assert torch.equal(codes, torch.cdist(latents, codebook[None]).argmin(-1))
    with pytest.raises(ValueError, match="architecture"):
        VQImageTokenizer(architecture="unet")
