"""Reading and writing images as people have them, for ``hat-upscale``.

Arrays are in RGB(A) order (OpenCV's BGR is converted here and nowhere else): ``(h, w)``
for gray, ``(h, w, 2)`` gray + alpha, ``(h, w, 3)`` RGB, ``(h, w, 4)`` RGBA; ``uint8`` or
``uint16``. Files are decoded from bytes (so any path works) and written atomically: a
temporary file in the target folder, fsync, then a rename, so an interrupted run never
leaves a half-written image, and an existing file is replaced only when asked.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from hat.atomic_io import atomic_write_bytes

PathLike = Union[str, os.PathLike]

#: File extensions read as images (lower case); one list for training data and hat-upscale.
from hat.data.image_lists import IMAGE_EXTENSIONS  # noqa: E402

#: Extensions whose format stores 16 bits per channel (through OpenCV).
SIXTEEN_BIT_EXTENSIONS = frozenset({'.png', '.tif', '.tiff'})

#: Extensions whose format stores an alpha channel (through OpenCV).
ALPHA_EXTENSIONS = frozenset({'.png', '.tif', '.tiff', '.webp'})

#: Extensions OpenCV rotates by their EXIF orientation when not reading "unchanged".
_EXIF_ORIENTED = frozenset({'.jpg', '.jpeg', '.jpe'})

_ENCODE_PARAMS = {
    '.jpg': [cv2.IMWRITE_JPEG_QUALITY, 95],
    '.jpeg': [cv2.IMWRITE_JPEG_QUALITY, 95],
    '.jpe': [cv2.IMWRITE_JPEG_QUALITY, 95],
    '.webp': [cv2.IMWRITE_WEBP_QUALITY, 95],
    '.png': [cv2.IMWRITE_PNG_COMPRESSION, 3],
}


class ImageReadError(ValueError):
    """A file could not be decoded as an image (corrupt, truncated or not an image)."""


def is_image_path(path: PathLike) -> bool:
    """True if ``path`` has an extension this module reads."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: PathLike) -> np.ndarray:
    """Decode ``path`` into an RGB(A)/gray ``uint8`` or ``uint16`` array (see the module docstring).

    JPEGs are turned upright by their EXIF orientation, as image viewers show them.
    """
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f'cannot read {path}: {error.strerror or error}') from error
    if data.size == 0:
        raise ImageReadError(f'{path} is empty')
    flags = cv2.IMREAD_UNCHANGED
    if path.suffix.lower() in _EXIF_ORIENTED:
        flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    image = cv2.imdecode(data, flags)
    if image is None:
        raise ImageReadError(f'{path} is not a readable image (corrupt, truncated or an unsupported format)')
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f'{path} has {image.dtype} pixels; only 8- and 16-bit images are supported '
                             f'(convert it to 8- or 16-bit PNG/TIFF first)')
    return _from_opencv(image)


def _from_opencv(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _to_opencv(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    if image.ndim == 3 and image.shape[2] == 2:
        gray, alpha = image[..., 0], image[..., 1]
        return np.dstack([gray, gray, gray, alpha])
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    return image


def fit_to_format(image: np.ndarray, ext: str) -> tuple[np.ndarray, list[str]]:
    """Convert ``image`` to what format ``ext`` stores; returns it and what was lost, in words.

    16-bit becomes 8-bit where the format has no 16 bits, and alpha is dropped where it has
    no alpha channel.
    """
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
    ok, buffer = cv2.imencode(ext, _to_opencv(image), _ENCODE_PARAMS.get(ext, []))
    if not ok:
        raise ValueError(f'OpenCV cannot encode a {image.dtype} image of shape {image.shape} as {ext}')
    return buffer.tobytes()


def write_image(path: PathLike, image: np.ndarray, overwrite: bool = False) -> None:
    """Encode ``image`` by ``path``'s extension and write it atomically.

    Raises :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is False; this is
    checked at the final rename, so a file that appears meanwhile is not replaced either.
    """
    path = Path(path)
    write_bytes_atomic(path, encode_image(image, path.suffix), overwrite)


def write_bytes_atomic(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` all or nothing (see ``hat.atomic_io``), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, overwrite)
