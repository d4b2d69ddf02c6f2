"""One list of image extensions for training data and hat-upscale, and every format on it decodes through both."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from basicsr.utils import imfrombytes

from hat.data import image_lists
from hat.inference import image_io
from tests.conftest import sample_photo


def test_one_list_for_training_data_and_upscaling():
    assert image_io.IMAGE_EXTENSIONS is image_lists.IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith('.') for ext in image_lists.IMAGE_EXTENSIONS)
    assert image_io.is_image_path('n01440764_10026.JPEG') and image_lists.is_image_file('n01440764_10026.JPEG')


@pytest.mark.parametrize('ext', image_lists.IMAGE_EXTENSIONS)
def test_every_listed_format_decodes_for_training_and_for_upscaling(tmp_path, ext):
    rgb = sample_photo('coffee')[:40, :48]
    gray = ext in ('.pgm', '.pbm')
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if gray else rgb[..., ::-1]
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(pixels))
    assert ok, f'OpenCV cannot write {ext}'
    path = tmp_path / f'photo{ext.upper()}'  # upper case too, as ImageNet names its files
    path.write_bytes(encoded.tobytes())
    assert image_lists.list_image_folder(str(tmp_path), 'test') == [path.name]

    for_training = imfrombytes(path.read_bytes(), float32=True)  # what basicsr's datasets call
    assert for_training.shape == (40, 48, 3) and for_training.dtype == np.float32
    for_upscaling = image_io.read_image(path)
    assert for_upscaling.shape[:2] == (40, 48)
