"""hat.data.image_lists.header_size: any image's size from its header alone, without changing Pillow's
process-wide decompression-bomb limit even for a moment."""
from __future__ import annotations

import struct
import types
import zlib

import cv2
import pytest
from conftest import sample_photo
from PIL import Image

from hat.data.image_lists import IMAGE_EXTENSIONS, header_size


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` (8-bit gray) and holds no pixels: header_size reads no further."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))

    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)) + \
        chunk(b'IEND', b'')


@pytest.fixture
def limit_writes(monkeypatch) -> list:
    """Every assignment to ``PIL.Image.MAX_IMAGE_PIXELS`` from here on."""
    writes: list = []

    class Watched(types.ModuleType):
        def __setattr__(self, name, value):
            if name == 'MAX_IMAGE_PIXELS':
                writes.append(value)
            super().__setattr__(name, value)

    monkeypatch.setattr(Image, '__class__', Watched)
    return writes


@pytest.mark.parametrize('ext', IMAGE_EXTENSIONS)
def test_every_image_format_is_measured_from_its_header(tmp_path, ext):
    path = tmp_path / f'photo{ext}'
    photo = sample_photo('coffee')[:40, :56]
    assert cv2.imwrite(str(path), photo[..., 0] if ext in ('.pgm', '.pbm') else photo)  # Netpbm: gray / bilevel
    assert header_size(str(path)) == (40, 56)


def test_a_size_above_pillows_bomb_limit_is_read_without_lifting_the_limit(tmp_path, limit_writes):
    limit = Image.MAX_IMAGE_PIXELS
    path = tmp_path / 'huge.png'
    path.write_bytes(png_header_only(20000, 30000))  # 600 megapixels: Image.open refuses it
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert header_size(str(path)) == (30000, 20000)
    assert limit_writes == []
    assert limit == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize('content, problem', [
    (b'a text file named like an image\n', 'cannot identify image file'),
    (png_header_only(64, 48)[:20], '.+'),  # cut inside the header
])
def test_a_file_without_a_readable_header_is_named(tmp_path, content, problem):
    path = tmp_path / 'broken.png'
    path.write_bytes(content)
    with pytest.raises(OSError, match=rf"cannot read image '.*broken.png' \({problem}\); replace or remove it"):
        header_size(str(path))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(OSError, match=r"cannot read image '.*gone.png' \(.*No such file"):
        header_size(str(tmp_path / 'gone.png'))
