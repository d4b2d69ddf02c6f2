"""Reading and writing images as people have them, for ``hat-upscale``.

Arrays are in RGB(A) order (OpenCV's BGR is converted here and nowhere else): ``(h, w)``
for gray, ``(h, w, 2)`` gray + alpha, ``(h, w, 3)`` RGB, ``(h, w, 4)`` RGBA; ``uint8`` or
``uint16``. Files are decoded from bytes (so any path works) and written atomically: a
temporary file in the target folder, fsync, then a rename, so an interrupted run never
leaves a half-written image, and an existing file is replaced only when asked.

Before decoding, the header is read (Pillow, which reads sizes without decoding): images above
``max_pixels`` are refused, so a small file that unpacks to gigabytes (a decompression bomb)
costs nothing, and multi-frame files (animated GIF, PNG or WebP, multi-page TIFF) are refused
rather than silently cut to their first frame.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from hat.weights.atomic_io import write_bytes_atomic

PathLike = Union[str, os.PathLike]

#: File extensions read as images (lower case); one list for training data and hat-upscale.
from hat.data.image_lists import IMAGE_EXTENSIONS  # noqa: E402

#: Formats read only when they hold a single frame (usually animations); inputs like any image,
#: so an animated file gets the same message whether named directly or found in a folder.
STILL_ONLY_EXTENSIONS = frozenset({'.gif'})

#: Largest image read by default, in pixels (width x height): 100 megapixels. Far above camera
#: photos; a decompression bomb (e.g. 20000x20000 in 0.4 MB) is refused before it is decoded.
DEFAULT_MAX_PIXELS = 100_000_000

#: Extensions whose format stores 16 bits per channel (through OpenCV).
SIXTEEN_BIT_EXTENSIONS = frozenset({'.png', '.tif', '.tiff'})

#: Extensions whose format stores an alpha channel (through OpenCV).
ALPHA_EXTENSIONS = frozenset({'.png', '.tif', '.tiff', '.webp'})

#: Extensions OpenCV rotates by their EXIF orientation when not reading "unchanged".
_EXIF_ORIENTED = frozenset({'.jpg', '.jpeg', '.jpe'})

_ENCODE_PARAMS = {**dict.fromkeys(('.jpg', '.jpeg', '.jpe'), [cv2.IMWRITE_JPEG_QUALITY, 95]),
                  '.webp': [cv2.IMWRITE_WEBP_QUALITY, 95], '.png': [cv2.IMWRITE_PNG_COMPRESSION, 3]}


class ImageReadError(ValueError):
    """A file could not be decoded as an image (corrupt, truncated, not an image, too large or animated)."""


def is_image_path(path: PathLike) -> bool:
    """True if ``path`` has an extension this module reads."""
    suffix = Path(path).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in STILL_ONLY_EXTENSIONS


def check_header(path: Path, data: Union[bytes, np.ndarray], max_pixels: Optional[int]) -> None:
    """Refuse, from ``data``'s header alone, multi-frame images and (unless ``max_pixels`` is None)
    images above ``max_pixels``. Formats Pillow does not know, and broken headers, are left to the
    decoder and its messages."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
                frames = int(getattr(header, 'n_frames', 1))
    except Image.DecompressionBombError:
        # Pillow does not even read headers beyond its own limit (about 179 megapixels).
        pillow_limit = 2 * Image.MAX_IMAGE_PIXELS
        if max_pixels is not None and max_pixels <= pillow_limit:
            raise ImageReadError(f'{path} is larger than {pillow_limit / 1e6:.0f} megapixels, above the limit of '
                                 f'{max_pixels / 1e6:g}; raise it with --max-megapixels if the image is real') from None
        return
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return
    if frames > 1:
        raise ImageReadError(f'{path} has {frames} frames (an animation or multi-page file); only still '
                             f'images are upscaled: extract the frames first (e.g. ffmpeg -i '
                             f'{path.name} frame_%04d.png)')
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(f'{path} is {width}x{height} = {width * height / 1e6:.0f} megapixels, above the limit '
                             f'of {max_pixels / 1e6:g}; raise it with --max-megapixels if the image is real '
                             f'(decoded, it needs {width * height * 3 / 2 ** 30:.1f} GiB or more)')


def read_image(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` into an RGB(A)/gray ``uint8``/``uint16`` array (module docstring), JPEGs upright by EXIF;
    images above ``max_pixels`` (None: no limit of ours) or with several frames are refused before decoding."""
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f'cannot read {path}: {error.strerror or error}') from error
    if data.size == 0:
        raise ImageReadError(f'{path} is empty')
    check_header(path, data, max_pixels)
    flags = cv2.IMREAD_UNCHANGED
    if path.suffix.lower() in _EXIF_ORIENTED:
        flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as error:
        if 'CV_IO_MAX_IMAGE_PIXELS' in str(error):
            raise ImageReadError(f'{path} is larger than OpenCV decodes by default (2**30 pixels); set the '
                                 f'environment variable CV_IO_MAX_IMAGE_PIXELS higher to read it') from None
        raise ImageReadError(f'{path} could not be decoded: {str(error).strip().splitlines()[-1]}') from None
    if image is None:
        raise ImageReadError(f'{path} is not a readable image (corrupt, truncated or an unsupported format)')
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f'{path} has {image.dtype} pixels; only 8- and 16-bit images are supported '
                             f'(convert it to 8- or 16-bit PNG/TIFF first)')
    return _swap_red_blue(image)


def _swap_red_blue(image: np.ndarray) -> np.ndarray:
    """RGB(A) <-> OpenCV's BGR(A) (one swap serves both ways); a single channel as a 2-D gray array."""
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return image


def fit_to_format(image: np.ndarray, ext: str) -> tuple[np.ndarray, list[str]]:
    """Convert ``image`` to what format ``ext`` stores (8 bits, no alpha where it has none); returns it and
    what was lost, in words."""
    ext = ext.lower()
    losses = []
    if image.dtype == np.uint16 and ext not in SIXTEEN_BIT_EXTENSIONS:
        image = ((image.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
        losses.append(f'16-bit reduced to 8-bit ({ext} stores 8 bits)')
    has_alpha = image.ndim == 3 and image.shape[2] in (2, 4)
    if has_alpha and ext not in ALPHA_EXTENSIONS:
        image = image[..., :-1]
        losses.append(f'alpha channel dropped ({ext} has no alpha)')
    return image, losses


def encode_image(image: np.ndarray, ext: str) -> bytes:
    """Encode an RGB(A)/gray array in the format named by ``ext`` (e.g. ``'.png'``)."""
    ext = ext.lower()
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f'can only encode uint8 or uint16 images, got {image.dtype}')
    gray_alpha = image.ndim == 3 and image.shape[2] == 2  # OpenCV writes alpha only with colour
    pixels = np.dstack([image[..., 0]] * 3 + [image[..., 1]]) if gray_alpha else image
    ok, buffer = cv2.imencode(ext, _swap_red_blue(pixels), _ENCODE_PARAMS.get(ext, []))
    if not ok:
        raise ValueError(f'OpenCV cannot encode a {image.dtype} image of shape {image.shape} as {ext}')
    return buffer.tobytes()


def write_image(path: PathLike, image: np.ndarray, overwrite: bool = False) -> None:
    """Encode ``image`` by ``path``'s extension and write it atomically; :class:`OutputExistsError` if ``path``
    exists (checked at the final rename, so one that appears meanwhile is kept too) and not ``overwrite``."""
    path = Path(path)
    write_bytes_atomic(path, encode_image(image, path.suffix), overwrite)
