"""Loading, validating and converting images to and from model tensors.

Understanding-side preprocessing has three modes (`PREPROCESS_MODES`), all ending in
a normalisation with mean = std = 0.5 by default, so pixels land in [-1, 1]:

- ``modal-core`` (models trained here): decode to upright 8-bit RGB (`load_image`:
  EXIF rotation, alpha composited on white, 16-bit rescaled), pad to a square with
  grey, resize (bicubic) to the model's size.
- ``official``: bit-exact to deepseek-ai/Janus's `VLMImageProcessor` as its
  `load_pil_images` feeds it: a plain ``convert("RGB")`` (no EXIF rotation; alpha
  dropped, not composited; 16-bit clipped), the longer side resized to the model's size
  with the shorter side *floored* (at least 14), then padded with the background colour
  ``int(mean * 255)``. The default of converted Janus checkpoints: the published Janus
  numbers were produced this way.
- ``transformers``: transformers' `JanusImageProcessor`: `load_image`'s decoding, the
  longer side resized with the shorter side *rounded* (at least 14), then padded grey.
"""

from __future__ import annotations

import io
import os
import struct
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
PREPROCESS_MODES = ("modal-core", "official", "transformers")
"""Understanding-side preprocessing modes (see the module docstring); the first is the default."""


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


def upright_rgb(image: Image.Image) -> Image.Image:
    """modal-core's conversion: EXIF orientation applied, transparency composited on
    white, 16-bit rescaled (not clipped), any mode to 8-bit RGB."""
    return _to_rgb(ImageOps.exif_transpose(image))


def plain_rgb(image: Image.Image) -> Image.Image:
    """Pillow's own ``convert("RGB")``, as the official Janus code loads images: no EXIF
    rotation, alpha dropped, 16-bit values clipped at 255."""
    return image.convert("RGB")


def load_image(
    source: ImageSource, max_pixels: int = 64_000_000, convert: Callable[[Image.Image], Image.Image] = upright_rgb
) -> Image.Image:
    """Open, verify and fully decode an image, returning it as an RGB image.

    `source` may be a path, the encoded bytes of an image file (plain, or named as an
    `EncodedImage`), or a PIL image.
    `convert` turns the decoded image into RGB: by default (`upright_rgb`) transparent
    images are composited on white; grayscale, palette, CMYK and 16-bit images are
    converted to 8-bit RGB; EXIF orientation is applied. `plain_rgb` is the official
    Janus loader's conversion.

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
            return convert(source)
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

    return _decode(opener, name, max_pixels, convert)


def _decode(opener: Callable[[], BinaryIO], name: str, max_pixels: int, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
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
                return convert(image)
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


def resize_longer_side(image: Image.Image, size: int, floor: bool = False, min_side: int = JANUS_MIN_SIDE) -> Image.Image:
    """Resize (bicubic) so the longer side is `size`, keeping the aspect ratio; the
    shorter side is at least `min_side`, rounded (transformers' JanusImageProcessor) or
    with `floor` rounded down (the official VLMImageProcessor, whose arithmetic this is)."""
    width, height = image.size
    longer = max(width, height)
    if floor:
        target = (max(int(width / longer * size), min_side), max(int(height / longer * size), min_side))
    else:
        scale = size / longer
        target = (max(round(width * scale), min_side), max(round(height * scale), min_side))
    return image.resize(target, Image.Resampling.BICUBIC)


def image_to_tensor(
    image: Image.Image,
    size: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    pad_square: bool = True,
    preprocess: str = "modal-core",
) -> torch.Tensor:
    """Convert an RGB image to a normalised float32 tensor of shape (3, size, size).

    `preprocess` ``modal-core``: with `pad_square` the image is padded to a square with
    Janus grey (keeping its aspect ratio) and then resized to `size`; without, it is
    stretched to the square. ``official`` / ``transformers`` (see the module docstring)
    resize the longer side first, then pad: the official code with the background colour
    ``int(mean * 255)``, transformers with Janus grey. (Both references rescale in
    float64 and cast to float32; for 8-bit values that equals the float32 division here.)
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need one value per RGB channel, got {mean} and {std}")
    if any(s == 0 for s in std):
        raise ValueError(f"std must not contain zeros, got {std}")
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}")
    rgb = _to_rgb(image)
    if preprocess == "official":
        rgb = pad_to_square(resize_longer_side(rgb, size, floor=True), tuple(int(m * 255) for m in mean))
    elif preprocess == "transformers":
        rgb = pad_to_square(resize_longer_side(rgb, size))
    elif pad_square:
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
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")  # open() applies the umask, as for every other file
    try:
        with temporary.open("wb") as stream:
            grid.save(stream, format="PNG")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
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
    """Turns image files, bytes or PIL images into normalised model input tensors, the
    `preprocess` way (one of `PREPROCESS_MODES`; the official and transformers modes
    always pad to a square)."""

    size: int = 384
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pad_square: bool = True
    max_pixels: int = 64_000_000
    preprocess: str = "modal-core"

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {self.preprocess!r}")

    def __call__(self, source: ImageSource) -> torch.Tensor:
        """Load and preprocess one image into a (3, size, size) float32 tensor."""
        return self.to_tensor(self.load(source))

    def load(self, source: ImageSource) -> Image.Image:
        """Load one image as RGB, the `preprocess` way."""
        return load_image(source, max_pixels=self.max_pixels, convert=plain_rgb if self.preprocess == "official" else upright_rgb)

    def to_tensor(self, image: Image.Image, pad_square: bool | None = None) -> torch.Tensor:
        """A loaded image as a (3, size, size) float32 tensor (`pad_square`: None keeps the processor's)."""
        pad = self.pad_square if pad_square is None else pad_square
        return image_to_tensor(image, self.size, self.mean, self.std, pad, self.preprocess)

    def describe(self) -> str:
        """One line saying how an image becomes a tensor (for protocol cards)."""
        steps = {
            "modal-core": "EXIF-upright RGB (alpha on white, 16-bit rescaled), "
            + ("padded to a square with (127, 127, 127), then bicubic resize" if self.pad_square else "bicubic stretch"),
            "official": "Janus VLMImageProcessor: plain convert('RGB'), longer side bicubic-resized with the shorter side floored"
            f" (>= {JANUS_MIN_SIDE}), padded with {tuple(int(m * 255) for m in self.mean)}",
            "transformers": "transformers JanusImageProcessor: EXIF-upright RGB (alpha on white, 16-bit rescaled), longer side"
            f" bicubic-resized with the shorter side rounded (>= {JANUS_MIN_SIDE}), padded with {JANUS_GREY}",
        }[self.preprocess]
        return f"preprocess {self.preprocess}: {steps}, to {self.size}x{self.size}; normalised with mean {self.mean}, std {self.std}"

    def batch(self, sources: Sequence[ImageSource]) -> torch.Tensor:
        """Load and preprocess several images into a (B, 3, size, size) tensor."""
        if not sources:
            raise ValueError("ImageProcessor.batch needs at least one image")
        return torch.stack([self(source) for source in sources])
