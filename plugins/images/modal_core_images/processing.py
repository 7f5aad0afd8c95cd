"""Loading, validating and converting images to and from model tensors.

Understanding-side preprocessing follows Janus: pad to a square with grey, resize
(bicubic) to the model's input size, and normalise with mean = std = 0.5 so pixels
land in [-1, 1]. transformers' `JanusImageProcessor` (and the official Janus processor)
resize the longer side first and pad the resized image; `resize_first` follows that
order pixel for pixel, which converted Janus checkpoints use.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from modal_core.errors import DataError

IN_MEMORY_NAME = "<in-memory image>"
JANUS_GREY = (127, 127, 127)
JANUS_MIN_SIDE = 14


@dataclass(frozen=True)
class EncodedImage:
    """The encoded bytes of an image file with a name for errors (e.g. `shard.tar:key.jpg`,
    a member of a WebDataset shard), so a corrupt one is reported by where it came from."""

    data: bytes
    name: str


ImageSource = str | os.PathLike | bytes | EncodedImage | Image.Image

# Pillow reports corrupt input through many exception types depending on the format plugin.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageInputError(DataError, ValueError):
    """An image file or buffer is missing, corrupt, too large, or not an image."""


def load_image(source: ImageSource, max_pixels: int = 64_000_000) -> Image.Image:
    """Open, verify and fully decode an image, returning it as an RGB image.

    `source` may be a path, the encoded bytes of an image file (plain, or named as an
    `EncodedImage`), or a PIL image.
    Transparent images are composited on white; grayscale, palette, CMYK and 16-bit
    images are converted to 8-bit RGB; EXIF orientation is applied.

    Raises:
        ImageInputError: the path is missing or empty, the data is not a decodable
            image, or the image has more than `max_pixels` pixels (or trips Pillow's
            own decompression-bomb guard). The message names the file, or
            "<in-memory image>" for plain bytes and PIL images.
    """
    if isinstance(source, Image.Image):
        _check_pixel_count(source.size, max_pixels, IN_MEMORY_NAME)
        try:
            source.load()
            return _to_rgb(ImageOps.exif_transpose(source))
        except _DECODE_ERRORS as err:
            raise ImageInputError(f"{IN_MEMORY_NAME}: could not decode the image ({err})") from err

    if isinstance(source, bytes | EncodedImage):
        name, data = (source.name, source.data) if isinstance(source, EncodedImage) else (IN_MEMORY_NAME, source)
        if not data:
            raise ImageInputError(f"{name}: the data is empty, expected an encoded image")

        def opener() -> BinaryIO:
            return io.BytesIO(data)

    else:
        path = Path(os.fspath(source))
        name = str(path)
        if not path.exists():
            raise ImageInputError(f"{name}: no such file, expected an image file")
        if not path.is_file():
            raise ImageInputError(f"{name}: not a regular file, expected an image file")
        if path.stat().st_size == 0:
            raise ImageInputError(f"{name}: the file is empty, expected an image")

        def opener() -> BinaryIO:
            return path.open("rb")

    return _decode(opener, name, max_pixels)


def _decode(opener: Callable[[], BinaryIO], name: str, max_pixels: int) -> Image.Image:
    """Verify then decode the image `opener` yields; every failure becomes ImageInputError."""
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a bomb is a bomb either way.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            # verify() checks the structure (e.g. PNG chunk CRCs) but leaves the image
            # unusable, so the file is opened a second time for the real decode.
            with opener() as stream, Image.open(stream) as probe:
                _check_pixel_count(probe.size, max_pixels, name)
                probe.verify()
            with opener() as stream, Image.open(stream) as image:
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
        except ImageInputError:
            raise
        except PermissionError as err:
            raise ImageInputError(f"{name}: cannot be read ({err.strerror})") from err
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
            raise ImageInputError(f"{name}: refusing a possible decompression bomb ({err}); expected at most {limit:,} pixels") from err
        except Image.UnidentifiedImageError as err:
            raise ImageInputError(f"{name}: not a recognised image format, expected e.g. PNG, JPEG or WebP") from err
        except _DECODE_ERRORS as err:
            raise ImageInputError(f"{name}: the image is corrupt or truncated ({err}); expected a complete image file") from err


def _check_pixel_count(size: tuple[int, int], max_pixels: int, name: str) -> None:
    """Reject images larger than `max_pixels` before any pixel data is decoded."""
    width, height = size
    if width * height > max_pixels:
        raise ImageInputError(
            f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels (possible decompression bomb); pass a larger max_pixels "
            "if the image is trusted"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Return a new 8-bit RGB image; transparency is composited over white."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own conversion clips 16-bit values at 255 instead of rescaling them.
        # Mode "I" is how some formats expose 16-bit grayscale, so it is scaled the same way.
        values = np.asarray(image, dtype=np.float32)
        scaled = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = JANUS_GREY) -> Image.Image:
    """Centre `image` on a square canvas of its longer side, filling the bars with `fill`."""
    width, height = image.size
    if width == height:
        return image.copy()
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resize_longer_side(image: Image.Image, size: int, min_side: int = JANUS_MIN_SIDE) -> Image.Image:
    """Resize (bicubic) so the longer side is `size`, keeping the aspect ratio; the
    shorter side is rounded and at least `min_side` (transformers' JanusImageProcessor)."""
    width, height = image.size
    scale = size / max(width, height)
    return image.resize((max(round(width * scale), min_side), max(round(height * scale), min_side)), Image.Resampling.BICUBIC)


def image_to_tensor(
    image: Image.Image,
    size: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    pad_square: bool = True,
    resize_first: bool = False,
) -> torch.Tensor:
    """Convert an image to a normalised float32 tensor of shape (3, size, size).

    With `pad_square` the image is padded to a square with Janus grey, so the aspect
    ratio is kept: before resizing it to `size`, or with `resize_first` after resizing
    its longer side to `size` (transformers' and the official Janus order, which blurs
    the bar edges less). Without `pad_square` the image is stretched to the square.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need one value per RGB channel, got {mean} and {std}")
    if any(s == 0 for s in std):
        raise ValueError(f"std must not contain zeros, got {std}")
    rgb = _to_rgb(image)
    if pad_square and resize_first:
        rgb = pad_to_square(resize_longer_side(rgb, size))
    if pad_square and not resize_first:
        rgb = pad_to_square(rgb)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((pixels - mean_t) / std_t).contiguous()


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """Convert a (3, H, W) tensor with values in [-1, 1] (clamped) to an RGB image."""
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a tensor of shape (3, H, W), got {tuple(tensor.shape)}")
    unit = (tensor.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) / 2.0
    pixels = (unit * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


def save_image_grid(
    images: list[Image.Image],
    path: str | os.PathLike,
    columns: int,
    captions: list[str] | None = None,
) -> None:
    """Write `images` as a PNG grid with `columns` columns, captions under each image.

    Cells are as large as the largest image; the file appears atomically (written to
    a temporary file in the same directory, then renamed over `path`).
    """
    if not images:
        raise ValueError("save_image_grid needs at least one image")
    if columns <= 0:
        raise ValueError(f"columns must be positive, got {columns}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"got {len(captions)} captions for {len(images)} images")

    cell_width = max(image.width for image in images)
    image_height = max(image.height for image in images)
    font = ImageFont.load_default()
    wrapped = [_wrap(caption, font, cell_width) for caption in captions] if captions else None
    line_height = _line_height(font)
    caption_height = max(len(lines) for lines in wrapped) * line_height + 4 if wrapped else 0
    cell_height = image_height + caption_height

    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * cell_width, rows * cell_height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for index, image in enumerate(images):
        left = (index % columns) * cell_width
        top = (index // columns) * cell_height
        grid.paste(_to_rgb(image), (left + (cell_width - image.width) // 2, top))
        if wrapped:
            for line_number, line in enumerate(wrapped[index]):
                y = top + image_height + 2 + line_number * line_height
                draw.text((left + 2, y), line, fill=(0, 0, 0), font=font)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            grid.save(stream, format="PNG")
        os.replace(temp_name, target)
    except BaseException:
        os.unlink(temp_name)
        raise


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    """Height of one caption line, including a little spacing."""
    _, top, _, bottom = font.getbbox("Ag")
    return bottom - top + 3


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedily break `text` into lines no wider than `width` (long words stay whole)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > width - 4:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    return lines


@dataclass(frozen=True)
class ImageProcessor:
    """Turns image files, bytes or PIL images into normalised model input tensors."""

    size: int = 384
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pad_square: bool = True
    max_pixels: int = 64_000_000
    resize_first: bool = False

    def __call__(self, source: ImageSource) -> torch.Tensor:
        """Load and preprocess one image into a (3, size, size) float32 tensor."""
        image = load_image(source, max_pixels=self.max_pixels)
        return image_to_tensor(image, self.size, self.mean, self.std, self.pad_square, self.resize_first)

    def batch(self, sources: Sequence[ImageSource]) -> torch.Tensor:
        """Load and preprocess several images into a (B, 3, size, size) tensor."""
        if not sources:
            raise ValueError("ImageProcessor.batch needs at least one image")
        return torch.stack([self(source) for source in sources])
