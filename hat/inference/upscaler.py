"""``Upscaler``: super-resolve numpy images with a HAT checkpoint (the engine of ``hat-upscale``).

Takes gray, gray + alpha, RGB and RGBA, 8 or 16 bit or float in [0, 1], in RGB order: colour runs through
the network (``hat.inference.engine``: blended tiles, out-of-memory halving, half-precision NaN/inf redone in
fp32, as validation does), alpha is upscaled bicubically. Defaults suit the machine at hand: ``tile='auto'``
runs the whole image when the memory model says it fits what the host (container and ulimits included) or the
GPU has free, else the largest tile that fits; ``precision='auto'`` runs bf16 where the device computes it
natively, fp32 elsewhere.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional, Union

import cv2
import numpy as np
import torch

from hat.inference.engine import InferenceEngine
from hat.inference.precision import PRECISIONS, auto_precision, precision_name
from hat.weights.checkpoint import load_hat, network_options

PathLike = Union[str, os.PathLike]

#: ITU-R BT.601 luma weights (R, G, B): how colour output returns to gray.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class NonFiniteOutputError(RuntimeError):
    """The network produced NaN or inf even in fp32 (a broken checkpoint or input)."""


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``'cpu'``, ``'cuda'`` or ``'cuda:N'`` (None: CUDA when available), with a clear error if absent."""
    if device is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f'unknown device {str(device)!r}; use cpu, cuda or cuda:N') from error
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {str(device)!r} was requested but CUDA is not available here; use --device cpu')
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f'device {str(device)!r} does not exist: this machine has '
                             f'{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)')
    elif device.type != 'cpu':
        raise ValueError(f'unsupported device {str(device)!r}; use cpu, cuda or cuda:N')
    return device


def choose_precision(precision: Union[str, torch.dtype], device: torch.device) -> tuple[str, str]:
    """The precision name to run on ``device`` and why, in words: ``'auto'`` (any case) resolved by
    :func:`~hat.inference.precision.auto_precision`, others checked against what the device supports."""
    if isinstance(precision, str) and precision.strip().lower() == 'auto':
        name = auto_precision(device)
        what = 'this CPU' if device.type == 'cpu' else torch.cuda.get_device_name(device)
        return name, f'auto: {what} {"computes bf16 natively" if name == "bf16" else "has no native bf16"}'
    name = precision_name(precision)
    if name == 'fp16' and device.type == 'cpu':
        raise ValueError('fp16 needs a CUDA device; on CPU use --precision bf16 (autocast) or fp32')
    if name == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise ValueError(f'{torch.cuda.get_device_name(device)} does not support bf16; use --precision fp16 or fp32')
    return name, 'as requested'


class Upscaler:
    """Super-resolve images with a HAT checkpoint: a path (.pth/.safetensors), a state_dict or a HAT module.

    ``precision``: 'auto', a name or a dtype (:attr:`precision_reason` says why it was chosen); ``tile``: 'auto',
    a size in input pixels or None (whole image; out-of-memory still halves it); ``tile_pad``: context blended
    away; ``tta``: x8 self-ensemble; ``config``: BasicSR options (path or dict) whose ``network_g`` overrides what
    the weights cannot tell. :attr:`engine` runs the network (see docs/upscale.md).
    """

    def __init__(
        self,
        checkpoint: Union[PathLike, Mapping[str, torch.Tensor], torch.nn.Module],
        device: Union[str, torch.device, None] = 'cpu',
        precision: Union[str, torch.dtype] = 'auto',
        tile: Union[int, str, None] = 'auto',
        tile_pad: int = 32,
        tta: bool = False,
        config: Union[PathLike, Mapping[str, Any], None] = None,
    ):
        self.device = resolve_device(device)
        self.precision, self.precision_reason = choose_precision(precision, self.device)
        self.dtype = PRECISIONS[self.precision]
        if isinstance(checkpoint, torch.nn.Module):
            self.model = checkpoint.eval().to(self.device)
        else:
            self.model = load_hat(checkpoint, device=self.device, **network_options(config))
        self.engine = InferenceEngine(self.model, self.device, self.dtype, tile, tile_pad, tta)
        plan = self.engine.plan
        self.scale, self.window_size, self.in_chans = plan.scale, plan.window, plan.in_chans

    def upscale(self, image: np.ndarray, on_pass: Optional[Callable[[], None]] = None) -> np.ndarray:
        """Super-resolve ``image`` (RGB order; see the module docstring); same dtype and channels out.
        ``on_pass`` is called after every network pass (a tile, a TTA transform), for progress bars."""
        image = np.asarray(image)
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
            raise ValueError(f'expected an image of shape (h, w) or (h, w, 1|2|3|4), got {image.shape}')
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f'image has an empty side: {image.shape}')
        pixels, peak = _to_float(image)
        squeeze = pixels.ndim == 2
        if squeeze:
            pixels = pixels[..., None]
        color, alpha = (pixels[..., :-1], pixels[..., -1]) if pixels.shape[2] in (2, 4) else (pixels, None)
        out = self._upscale_color(color, on_pass)
        if alpha is not None:
            out = np.concatenate([out, self._resize(alpha)[..., None]], axis=2)
        if squeeze:
            out = out[..., 0]
        return _from_float(out, image.dtype, peak)

    def _resize(self, plane: np.ndarray) -> np.ndarray:
        h, w = plane.shape[:2]
        resized = cv2.resize(plane, (w * self.scale, h * self.scale), interpolation=cv2.INTER_CUBIC)
        return np.clip(resized, 0.0, 1.0)

    def _upscale_color(self, color: np.ndarray, on_pass) -> np.ndarray:
        """``(h, w, 1|3)`` float32 in [0, 1] through the network, matching its channel count."""
        gray = color.shape[2] == 1
        if self.in_chans == color.shape[2]:
            return self._run(color, on_pass)
        if self.in_chans == 3 and gray:
            rgb = self._run(np.repeat(color, 3, axis=2), on_pass)
            return (rgb @ LUMA_WEIGHTS)[..., None]
        if self.in_chans == 1 and not gray:
            # Luma through the network, chroma bicubic: the usual way to run a gray model on colour.
            ycrcb = cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_RGB2YCrCb)
            y = self._run(ycrcb[..., :1], on_pass)
            chroma = cv2.resize(ycrcb[..., 1:], (y.shape[1], y.shape[0]), interpolation=cv2.INTER_CUBIC)
            return np.clip(cv2.cvtColor(np.dstack([y[..., 0], chroma]), cv2.COLOR_YCrCb2RGB), 0.0, 1.0)
        raise ValueError(f'a {self.in_chans}-channel model cannot take a {color.shape[2]}-channel image')

    def _run(self, image: np.ndarray, on_pass) -> np.ndarray:
        """HWC float32 -> upscaled HWC float32 clipped to [0, 1], through the engine."""
        out = self.engine.run(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None], on_pass)
        if not torch.isfinite(out).all():
            raise NonFiniteOutputError('the network produced NaN/inf in fp32; the checkpoint or the '
                                       'options (img_range, conv_scale) are probably wrong')
        return out[0].clamp_(0, 1).permute(1, 2, 0).numpy()


def _to_float(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Pixels as float32 in [0, 1] and the integer peak they were divided by (1 for floats)."""
    if image.dtype in (np.uint8, np.uint16):
        peak = float(np.iinfo(image.dtype).max)
        return image.astype(np.float32) / peak, peak
    if image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ValueError(f'the image has {int(np.size(image) - np.isfinite(image).sum())} NaN or infinite '
                             f'pixel values; float images must hold finite values in [0, 1]')
        return np.clip(image.astype(np.float32), 0.0, 1.0), 1.0
    raise TypeError(f'unsupported pixel type {image.dtype}; use uint8, uint16 or float in [0, 1]')


def _from_float(image: np.ndarray, dtype: np.dtype, peak: float) -> np.ndarray:
    if peak == 1.0:
        return image.astype(dtype)
    return np.clip(image * peak + 0.5, 0, peak).astype(dtype)
