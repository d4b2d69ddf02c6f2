"""hat.inference.image_io: formats, bit depths, channel order, atomic and non-destructive writes."""
from __future__ import annotations

import os
import stat

import cv2
import numpy as np
import pytest
from conftest import sample_photo

from hat.inference.image_io import (
    ImageReadError,
    encode_image,
    fit_to_format,
    read_image,
    write_image,
)
from hat.weights.atomic_io import OutputExistsError


def photo16() -> np.ndarray:
    """A 16-bit RGB image whose low byte carries detail that 8 bits cannot hold."""
    image = sample_photo('coffee')[:40, :56].astype(np.uint16) * 256
    return image + (np.arange(56, dtype=np.uint16)[None, :, None] * 3 + np.arange(3, dtype=np.uint16))


def rgba_photo(size: int = 48) -> np.ndarray:
    """A photo crop with a soft round alpha mask (opaque centre, transparent corners)."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    alpha = np.clip(255 * (1.2 - np.hypot(yy, xx) / (size / 2)), 0, 255).astype(np.uint8)
    return np.dstack([sample_photo('astronaut')[60:60 + size, 200:200 + size], alpha])


@pytest.mark.parametrize('ext', ['.png', '.tif', '.bmp', '.webp'])
def test_rgb_round_trip_keeps_channel_order(tmp_path, ext):
    image = sample_photo('astronaut')[:48, :64]
    path = tmp_path / f'photo{ext}'
    write_image(path, image)
    quality = {'.webp': 30.0}.get(ext, np.inf)
    back = read_image(path)
    assert back.shape == image.shape and back.dtype == np.uint8
    if np.isinf(quality):
        np.testing.assert_array_equal(back, image)
    else:
        psnr = 10 * np.log10(255.0 ** 2 / np.mean((back.astype(float) - image) ** 2))
        assert psnr > quality
    # Files hold BGR: OpenCV's own reader sees the red channel last.
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(raw[..., 2].astype(float).mean(), image[..., 0].mean(), atol=2)


@pytest.mark.parametrize('ext', ['.png', '.tif'])
def test_16_bit_round_trip(tmp_path, ext):
    image = photo16()
    write_image(tmp_path / f'deep{ext}', image)
    back = read_image(tmp_path / f'deep{ext}')
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image)


def test_gray_and_alpha_round_trip(tmp_path):
    gray = sample_photo('camera')[:40, :50, 0]
    write_image(tmp_path / 'gray.png', gray)
    back = read_image(tmp_path / 'gray.png')
    assert back.ndim == 2
    np.testing.assert_array_equal(back, gray)

    rgba = rgba_photo()
    write_image(tmp_path / 'logo.png', rgba)
    np.testing.assert_array_equal(read_image(tmp_path / 'logo.png'), rgba)


def test_jpeg_is_turned_upright_by_exif_orientation(tmp_path):
    from PIL import Image

    image = sample_photo('chelsea')[:40, :64]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(image).save(tmp_path / 'phone.jpg', exif=exif.tobytes(), quality=95)
    back = read_image(tmp_path / 'phone.jpg')
    assert back.shape == (64, 40, 3)
    upright = np.rot90(image, k=-1)
    assert np.abs(back.astype(float) - upright).mean() < 4


def test_unreadable_files_raise_a_clear_error(tmp_path):
    good = encode_image(sample_photo('astronaut')[:32, :32], '.png')
    (tmp_path / 'truncated.png').write_bytes(good[:len(good) // 3])
    (tmp_path / 'text.jpg').write_text('not an image')
    (tmp_path / 'empty.png').write_bytes(b'')
    for name in ('truncated.png', 'text.jpg', 'empty.png'):
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)
    with pytest.raises(ImageReadError, match='cannot read'):
        read_image(tmp_path / 'missing.png')


def test_float_images_are_refused_with_a_fix(tmp_path):
    ok, buffer = cv2.imencode('.tif', np.random.default_rng(0).random((8, 8, 3), dtype=np.float32))
    assert ok
    (tmp_path / 'float.tif').write_bytes(buffer.tobytes())
    with pytest.raises(ImageReadError, match='8- or 16-bit'):
        read_image(tmp_path / 'float.tif')


def test_existing_file_is_not_replaced_without_overwrite(tmp_path):
    path = tmp_path / 'out' / 'result.png'
    first, second = sample_photo('astronaut')[:32, :32], sample_photo('coffee')[:32, :32]
    write_image(path, first)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match='already exists'):
        write_image(path, second)
    assert path.read_bytes() == before
    write_image(path, second, overwrite=True)
    np.testing.assert_array_equal(read_image(path), second)
    # No temporary files left behind; permissions follow the umask, not mkstemp's 0600.
    assert sorted(p.name for p in path.parent.iterdir()) == ['result.png']
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_failed_encode_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_image(tmp_path / 'x.png', np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_fit_to_format_says_what_is_lost():
    image16 = np.dstack([photo16(), np.full((40, 56), 40000, np.uint16)])
    kept, losses = fit_to_format(image16, '.png')
    assert kept is image16 and losses == []
    jpeg, losses = fit_to_format(image16, '.jpg')
    assert jpeg.dtype == np.uint8 and jpeg.shape == (40, 56, 3)
    assert any('8-bit' in loss for loss in losses) and any('alpha' in loss for loss in losses)
    np.testing.assert_allclose(jpeg.astype(float), image16[..., :3] / 257.0, atol=0.5 + 1e-6)
