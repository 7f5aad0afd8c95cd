"""Image loading, conversion and preprocessing."""

from __future__ import annotations

import io
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modal_core_images.processing import (
    IN_MEMORY_NAME,
    ImageInputError,
    ImageProcessor,
    image_to_tensor,
    load_image,
    pad_to_square,
    save_image_grid,
    tensor_to_image,
)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (10, 20, 30, 255))  # opaque: unchanged
    image.putpixel((1, 0), (10, 20, 30, 0))  # transparent: white
    image.putpixel((2, 0), (0, 0, 0, 128))  # half black over white: mid grey
    path = tmp_path / "alpha.png"
    image.save(path)

    rgb = load_image(path)

    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (10, 20, 30)
    assert rgb.getpixel((1, 0)) == (255, 255, 255)
    assert all(abs(channel - 127) <= 1 for channel in rgb.getpixel((2, 0)))


def test_grayscale_with_alpha_is_composited_on_white() -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (40, 255))
    image.putpixel((1, 0), (40, 0))

    rgb = load_image(_png_bytes(image))

    assert [rgb.getpixel((x, 0)) for x in range(2)] == [(40, 40, 40), (255, 255, 255)]


def test_grayscale_becomes_equal_rgb_channels() -> None:
    image = Image.new("L", (2, 1))
    image.putpixel((1, 0), 200)

    rgb = load_image(_png_bytes(image))

    assert rgb.mode == "RGB"
    assert [rgb.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (200, 200, 200)]


def test_palette_image_uses_palette_colours_and_transparency() -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 0, 255, 9, 9, 9] + [0] * (256 * 3 - 9))
    image.putdata([0, 1, 2])
    image.info["transparency"] = 2

    rgb = load_image(_png_bytes(image))

    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(255, 0, 0), (0, 0, 255), (255, 255, 255)]


def test_cmyk_converts_to_rgb(tmp_path: Path) -> None:
    image = Image.new("CMYK", (3, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))  # no ink: white
    image.putpixel((1, 0), (255, 0, 0, 0))  # full cyan
    image.putpixel((2, 0), (0, 0, 0, 255))  # full black
    path = tmp_path / "cmyk.tiff"
    image.save(path)

    rgb = load_image(path)

    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(255, 255, 255), (0, 255, 255), (0, 0, 0)]


def test_sixteen_bit_grayscale_is_rescaled_not_clipped() -> None:
    image = Image.new("I;16", (3, 1))
    for x, value in enumerate((0, 128 * 257, 65535)):
        image.putpixel((x, 0), value)

    rgb = load_image(_png_bytes(image))

    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_pil_image_input_is_converted_and_not_modified() -> None:
    image = Image.new("L", (2, 2), 90)

    rgb = load_image(image)

    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (90, 90, 90)
    assert image.mode == "L"


def test_pad_to_square_centres_image_between_grey_bars() -> None:
    wide = Image.new("RGB", (6, 2), (255, 0, 0))

    square = pad_to_square(wide)

    assert square.size == (6, 6)
    pixels = np.asarray(square)
    assert (pixels[:2] == 127).all() and (pixels[4:] == 127).all()
    assert (pixels[2:4] == (255, 0, 0)).all()


def test_pad_to_square_tall_image_gets_side_bars() -> None:
    tall = Image.new("RGB", (2, 4), (0, 255, 0))

    pixels = np.asarray(pad_to_square(tall, fill=(1, 2, 3)))

    assert pixels.shape == (4, 4, 3)
    assert (pixels[:, 0] == (1, 2, 3)).all() and (pixels[:, 3] == (1, 2, 3)).all()
    assert (pixels[:, 1:3] == (0, 255, 0)).all()


def test_normalisation_maps_black_to_minus_one_and_white_to_one() -> None:
    half = Image.new("RGB", (8, 8), (0, 0, 0))
    half.paste((255, 255, 255), (0, 4, 8, 8))

    tensor = image_to_tensor(half, size=8)

    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32
    assert torch.equal(tensor[:, :4], torch.full((3, 4, 8), -1.0))
    assert torch.equal(tensor[:, 4:], torch.ones(3, 4, 8))


def test_image_to_tensor_pads_with_grey_before_resizing() -> None:
    wide = Image.new("RGB", (16, 8), (255, 255, 255))

    padded = image_to_tensor(wide, size=16)
    stretched = image_to_tensor(wide, size=16, pad_square=False)

    grey = 127 / 255 * 2 - 1
    assert torch.allclose(padded[:, 0], torch.full((3, 16), grey))
    assert torch.allclose(padded[:, 8], torch.ones(3, 16))
    assert torch.equal(stretched, torch.ones(3, 16, 16))


def test_tensor_to_image_round_trip_is_exact() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 5, 3), dtype=np.uint8)

    tensor = image_to_tensor(Image.fromarray(pixels), size=5)
    restored = tensor_to_image(tensor)

    assert restored.mode == "RGB"
    assert np.array_equal(np.asarray(restored), pixels)
    assert torch.allclose(image_to_tensor(restored, size=5), tensor)


def test_tensor_to_image_clamps_out_of_range_values() -> None:
    tensor = torch.tensor([-3.0, 0.0, 3.0]).view(3, 1, 1)

    assert tensor_to_image(tensor).getpixel((0, 0)) == (0, 128, 255)


def test_save_image_grid_writes_png_with_captions(tmp_path: Path) -> None:
    images = [Image.new("RGB", (20, 10), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "out" / "grid.png"

    save_image_grid(images, path, columns=2, captions=["red", "green", "a rather long blue caption"])

    grid = Image.open(path)
    assert grid.format == "PNG"
    assert grid.width == 40 and grid.height > 2 * 10
    assert grid.getpixel((5, 5)) == (255, 0, 0)
    assert grid.getpixel((25, 5)) == (0, 255, 0)
    caption_area = np.asarray(grid.convert("L"))[10 : grid.height // 2, :20]
    assert (caption_area < 128).any(), "caption text should be drawn under the first image"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"], "no temporary files left behind"


def test_save_image_grid_gives_the_file_the_permissions_of_any_other(tmp_path: Path) -> None:
    path = tmp_path / "grid.png"
    plain = tmp_path / "plain.txt"
    plain.write_text("made by open()")

    save_image_grid([Image.new("RGB", (4, 4))], path, columns=1)

    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_image_processor_batches_mixed_sources(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    Image.new("RGB", (10, 5), (255, 0, 0)).save(path)
    processor = ImageProcessor(size=12)

    batch = processor.batch([path, _png_bytes(Image.new("L", (3, 3))), Image.new("RGBA", (4, 4))])

    assert batch.shape == (3, 3, 12, 12) and batch.dtype == torch.float32
    assert torch.allclose(batch[0, :, 6, 6], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.equal(batch[1], torch.full((3, 12, 12), -1.0))
    assert torch.equal(batch[2], torch.ones(3, 12, 12))


def _bomb_png(side: int = 100_000) -> bytes:
    """A tiny PNG whose header claims `side` x `side` pixels."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")


def _truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(noise))
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("corrupt.png", bytes(range(256)) * 4, "not a recognised image"),
        ("truncated.png", _truncated_png(), "corrupt or truncated"),
        ("notes.png", b"this is a text file, not an image\n", "not a recognised image"),
        ("empty.png", b"", "empty"),
        ("bomb.png", _bomb_png(), "decompression bomb"),
    ],
)
def test_bad_files_raise_image_input_error_naming_the_file(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(ImageInputError, match=expected) as error:
        load_image(path)

    assert name in str(error.value)


def test_missing_path_raises_image_input_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.png"

    with pytest.raises(ImageInputError, match="no such file") as error:
        load_image(str(path))

    assert "nowhere.png" in str(error.value)


def test_max_pixels_limit_is_enforced(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    Image.new("RGB", (64, 64)).save(path)

    with pytest.raises(ImageInputError, match="exceeds the limit of 1,000 pixels") as error:
        load_image(path, max_pixels=1000)
    assert "large.png" in str(error.value)

    with pytest.raises(ImageInputError, match="exceeds the limit"):
        ImageProcessor(size=8, max_pixels=1000)(Image.new("RGB", (64, 64)))


def test_pillow_bomb_warning_is_an_error_even_when_max_pixels_allows_it() -> None:
    # 10000 x 10000 is above Pillow's warning threshold but below its hard limit.
    assert Image.MAX_IMAGE_PIXELS < 10_000**2 < 2 * Image.MAX_IMAGE_PIXELS

    with pytest.raises(ImageInputError, match="decompression bomb"):
        load_image(_bomb_png(10_000), max_pixels=10**9)


def test_bad_bytes_are_reported_as_in_memory_image() -> None:
    with pytest.raises(ImageInputError) as error:
        load_image(b"\x00\x01garbage")

    assert IN_MEMORY_NAME in str(error.value)


def test_image_input_error_is_a_value_error() -> None:
    assert issubclass(ImageInputError, ValueError)
