"""Configurations and inputs the network cannot take fail with errors that name the fix."""
import pytest
import torch

from hat import HAT
from tests.conftest import TINY_CONFIG


@pytest.mark.parametrize('override,message', [
    (dict(embed_dim=25), r'embed_dim=25 is not divisible by num_heads entry 3'),
    (dict(num_heads=[3]), r'one entry per residual group; got 2 depths'),
    (dict(upscale=5), r'upscale=5 is not supported: use 1, 3 or a power of two'),
    (dict(upscale=6), r'upscale=6 is not supported'),
    (dict(window_size=0), r'window_size must be a positive integer'),
    (dict(window_size=-8), r'window_size must be a positive integer'),
    (dict(upsampler='pixelshuffledirect'), r"upsampler='pixelshuffledirect' is not supported.*silently"),
    (dict(upsampler=''), r"upsampler='' is not supported"),
    (dict(resi_connection='3conv'), r"resi_connection='3conv' is not supported"),
    (dict(window_size=7, img_size=64), r'enlarges the 7-pixel windows by 3 pixels; it must be an even number'),
    (dict(img_size=4), r'smaller than window_size=8'),
    (dict(squeeze_factor=48), r'must not exceed embed_dim=24'),
    (dict(depths=[]), r'one entry per residual group|non-empty'),
    (dict(in_chans=0), r'in_chans must be a positive integer'),
])
def test_bad_configuration(override, message):
    with pytest.raises(ValueError, match=message):
        HAT(**{**TINY_CONFIG, **override})


@pytest.fixture(scope='module')
def tiny():
    return HAT(**TINY_CONFIG).eval()


@pytest.mark.parametrize('x,error,message', [
    (torch.rand(3, 16, 16), ValueError, r'shape \(batch, 3, height, width\), got \(3, 16, 16\)'),
    (torch.rand(1, 1, 16, 16), ValueError, r'got \(1, 1, 16, 16\)'),
    (torch.rand(1, 4, 16, 16), ValueError, r'got \(1, 4, 16, 16\)'),
    (torch.zeros(1, 3, 0, 16), ValueError, r'empty dimension'),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), TypeError, r'floating-point.*x.float\(\) / 255'),
])
def test_bad_input_tensor(tiny, x, error, message):
    with pytest.raises(error, match=message):
        tiny(x)


def test_non_tensor_input(tiny):
    with pytest.raises(TypeError, match='expects a torch.Tensor, got ndarray'):
        tiny(torch.rand(1, 3, 8, 8).numpy())


def test_unknown_constructor_argument_is_not_swallowed():
    with pytest.raises(TypeError, match='windowsize'):
        HAT(**TINY_CONFIG, windowsize=8)


def test_absolute_position_embedding_needs_training_size():
    model = HAT(**{**TINY_CONFIG, 'ape': True, 'img_size': 16}).eval()
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match=r'ape=True.*\(16, 16\) inputs; got \(24, 16\)'):
        model(torch.rand(1, 3, 24, 16))
