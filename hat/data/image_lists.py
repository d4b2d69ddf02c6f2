"""Which files are images, and listing dataset images (folder, meta_info file or LMDB) with clear errors.

The one home of :data:`IMAGE_EXTENSIONS`: training data (basicsr decodes it with OpenCV) and
``hat-upscale`` (``hat.inference.image_io``, also OpenCV) read the same formats.
"""
from __future__ import annotations

import os
import struct
from typing import Optional

#: File endings read as images, lower case (compared case-insensitively: ImageNet's files end in .JPEG); only
#: formats every opencv-python build decodes to 8/16-bit pixels (no JPEG 2000, OpenEXR, AVIF, Radiance HDR).
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.jpe', '.bmp', '.dib', '.tif', '.tiff', '.webp',
                    '.ppm', '.pgm', '.pbm', '.pnm')


def is_image_file(name: str) -> bool:
    """True for names with one of :data:`IMAGE_EXTENSIONS`, in any case."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_image_folder(folder: str, what: str, recursive: bool = True) -> list[str]:
    """Sorted image paths relative to ``folder``; ``what`` names the option in errors (e.g. ``dataroot_gt``)."""
    if os.path.isfile(folder):
        raise NotADirectoryError(f'{what}: {folder!r} is a file; give the folder that holds the images')
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{what}: folder {folder!r} does not exist (relative paths start from the folder '
                                f'you run in, {os.getcwd()!r})')
    if recursive:
        names = [os.path.relpath(os.path.join(root, name), folder)
                 for root, _, files in os.walk(folder, followlinks=True) for name in files if is_image_file(name)]
    else:
        names = [name for name in os.listdir(folder) if is_image_file(name)]
    if not names:
        raise ValueError(f'{what}: folder {folder!r} contains no images ({", ".join(IMAGE_EXTENSIONS)})')
    return sorted(names)


def read_meta_info(meta_info_file: str, what: str = 'meta_info_file') -> list[str]:
    """The first token of every non-empty line of a BasicSR meta_info file (a relative image path)."""
    if not os.path.isfile(meta_info_file):
        raise FileNotFoundError(f'{what}: {meta_info_file!r} does not exist; make one with '
                                '`python -m hat.scripts.make_meta_info`')
    with open(meta_info_file, encoding='utf-8') as f:
        names = [line.split()[0] for line in f if line.strip()]
    if not names:
        raise ValueError(f'{what}: {meta_info_file!r} lists no images')
    return names


def read_lmdb_meta(lmdb_folder: str, what: str) -> dict[str, Optional[tuple[int, int, int]]]:
    """LMDB keys (image names without extension) -> (h, w, c) shape from the LMDB's meta_info.txt."""
    if not lmdb_folder.endswith('.lmdb'):
        raise ValueError(f'{what}: {lmdb_folder!r} should be an LMDB folder ending in .lmdb (io_backend type lmdb)')
    if not os.path.isfile(os.path.join(lmdb_folder, 'data.mdb')):
        raise FileNotFoundError(f'{what}: {lmdb_folder!r} is not an LMDB (no data.mdb); build it with '
                                '`python -m hat.scripts.make_lmdb`')
    meta_file = os.path.join(lmdb_folder, 'meta_info.txt')
    read_meta_info(meta_file, f'{what} meta_info.txt')
    meta: dict[str, Optional[tuple[int, int, int]]] = {}
    with open(meta_file, encoding='utf-8') as f:
        for parts in (line.split() for line in f if line.strip()):
            shape = parts[1] if len(parts) > 1 and parts[1].startswith('(') else None
            meta[os.path.splitext(parts[0])[0]] = tuple(int(v) for v in shape.strip('()').split(',')) if shape else None
    return meta


def header_size(path: str) -> tuple[int, int]:
    """(height, width) from an image file's header, without decoding; OSError naming the file if it has none.
    Pillow's readers are called directly: ``Image.open`` would apply its process-wide decompression-bomb limit."""
    from PIL import Image

    Image.init()  # every format reader Pillow has, registered in Image.ID / Image.OPEN
    try:
        with open(path, 'rb') as handle:
            prefix = handle.read(16)
            for name in Image.ID:
                reader, accepts = Image.OPEN[name]
                verdict = accepts(prefix) if accepts else True
                if not verdict or isinstance(verdict, str):  # a str: recognised, but not readable by Pillow
                    continue
                handle.seek(0)
                try:
                    width, height = reader(handle, path).size
                except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open takes as "not this"
                    continue
                return height, width
    except (OSError, ValueError) as error:
        raise OSError(_unreadable(path, str(error))) from error
    raise OSError(_unreadable(path, 'cannot identify image file'))


def _unreadable(path: str, problem: str) -> str:
    return (f'cannot read image {path!r} ({problem}); replace or remove it '
            '(`python -m hat.scripts.check_data` lists every bad image)')
