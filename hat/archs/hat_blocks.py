"""Building blocks of HAT: channel attention (CAB), hybrid attention block (HAB),
overlapping cross-attention block (OCAB), residual hybrid attention group (RHAG), and the
pixel-shuffle upsampler.

Module and attribute names follow the original release exactly, because they are the
``state_dict`` keys of the published checkpoints (e.g. ``conv_block.cab.3.attention.1``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import checkpoint

from hat.archs.hat_attention import OverlapCrossAttention, WindowAttention, kernel_head_dim, padded_projection


class AttentionInputs(NamedTuple):
    """Per-forward values shared by every block: indices into the bias tables, the
    shifted-window masks (``hat_attention.shifted_window_masks``), the dtype the
    branches compute in (the residual stream may be wider: see :func:`stream_dtype`) and,
    for memory-bounded inference, the pixel rows per band (None: the whole image at once)."""

    rpi_sa: torch.Tensor
    rpi_oca: torch.Tensor
    shift_masks: torch.Tensor
    compute_dtype: torch.dtype
    band_rows: Optional[int] = None


def bands(height: int, rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of at most ``rows`` rows covering ``height``."""
    return [(r0, min(r0 + rows, height)) for r0 in range(0, height, rows)]


def wrapped_rows(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start .. stop - 1`` of ``(b, h, w, c)`` taken modulo ``h`` (a band of the cyclically
    shifted image), as one tensor."""
    h = x.shape[1]
    if stop <= h:
        return x[:, start:stop]
    return torch.cat([x[:, start:], x[:, :stop - h]], dim=1)


def add_wrapped_rows_(x: torch.Tensor, start: int, band: torch.Tensor) -> None:
    """``x[:, start:start + rows] += band`` with rows taken modulo ``x``'s height (in place)."""
    h, rows = x.shape[1], band.shape[1]
    first = min(rows, h - start)
    x[:, start:start + first] += band[:, :first]
    if first < rows:
        x[:, :rows - first] += band[:, first:]


# Half precision: the residual stream adds up the output of every block and can outgrow
# float16 (max 65504) in trained networks, so it is kept in float32 together with the ops
# that read it unnormalised (LayerNorm, the 3x3 conv closing each RHAG); the branches
# (attention, MLP, CAB) run in half precision on normalised inputs. For float32/float64
# every cast below is a no-op.
def stream_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the residual stream for branches computing in ``dtype``: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def _cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype)


def _autocast_off(x: torch.Tensor):
    """Context that turns autocast off for ``x``'s device (nothing to turn off on e.g. meta)."""
    if torch.amp.is_autocast_available(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def stream_layer_norm(norm: nn.LayerNorm, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``norm(x)`` computed in ``x``'s precision (autocast off), handed on as ``out_dtype``."""
    with _autocast_off(x):
        y = F.layer_norm(x, norm.normalized_shape, _cast(norm.weight, x.dtype), _cast(norm.bias, x.dtype), norm.eps)
    return y.to(out_dtype)


def stream_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` computed in ``x``'s precision (autocast off)."""
    with _autocast_off(x):
        return F.conv2d(x, conv.weight.to(x.dtype), _cast(conv.bias, x.dtype), conv.stride, conv.padding,
                        conv.dilation, conv.groups)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``drop_prob`` in training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (as in RCAN): rescales each channel by a gate in (0, 1)."""

    def __init__(self, num_feat: int, squeeze_factor: int = 16):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Gate ``x``; if ``x`` holds ``scale`` times the features, the gate is computed from the
        unscaled ones. The tiny squeeze path runs in at least float32 (autocast off)."""
        pool, squeeze, _, expand, _ = self.attention
        acc = stream_dtype(x.dtype)
        with _autocast_off(x):
            z = pool(x).to(acc) / scale
            z = F.relu(F.conv2d(z, squeeze.weight.to(acc), _cast(squeeze.bias, acc)))
            gate = torch.sigmoid(F.conv2d(z, expand.weight.to(acc), _cast(expand.bias, acc)))
        return x * gate.to(x.dtype)

    def gate_(self, x: torch.Tensor, scale: float = 1.0) -> None:
        """:meth:`forward` in place on ``x`` (inference)."""
        pool, squeeze, _, expand, _ = self.attention
        acc = stream_dtype(x.dtype)
        with _autocast_off(x):
            z = x.mean((2, 3), keepdim=True, dtype=acc) / scale
            z = F.relu(F.conv2d(z, squeeze.weight.to(acc), _cast(squeeze.bias, acc)))
            gate = torch.sigmoid(F.conv2d(z, expand.weight.to(acc), _cast(expand.bias, acc)))
        x.mul_(gate.to(x.dtype))


class CAB(nn.Module):
    """Channel attention block: conv (compress) - GELU - conv (expand) - channel attention."""

    def __init__(self, num_feat: int, compress_ratio: int = 3, squeeze_factor: int = 30):
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``scale * cab(x)``. The scale is applied before the expanding conv, so its large
        unscaled output (HAT weights it by ``conv_scale=0.01``) never exists in half precision."""
        compress, act, expand, attention = self.cab
        if scale == 0:  # the branch is switched off; the gate below would divide by zero
            return torch.zeros_like(x)
        y = act(compress(x)) * scale
        y = F.conv2d(y, expand.weight, None if expand.bias is None else expand.bias * scale, expand.stride,
                     expand.padding)
        return attention(y, scale)

    def forward_bands(self, rows: Callable[[int, int], torch.Tensor], out: torch.Tensor, scale: float,
                      band_rows: int) -> None:
        """Inference in bands of rows: write ``forward(x, scale)`` into ``out`` ``(b, h, w, c)``, where
        ``rows(r0, r1)`` gives rows ``[r0, r1)`` of ``x`` as ``(b, r1 - r0, w, c)``. Each band is
        computed from two extra rows on each side (the two 3x3 convs); only the channel gate
        needs the whole map, and it is applied to ``out`` in place."""
        compress, act, expand, attention = self.cab
        h = out.shape[1]
        if scale == 0:
            out.zero_()
            return
        bias = None if expand.bias is None else expand.bias * scale
        for r0, r1 in bands(h, band_rows):
            lo, hi = max(r0 - 2, 0), min(r1 + 2, h)
            y = act(compress(rows(lo, hi).permute(0, 3, 1, 2))) * scale
            # Rows computed from the zero padding at a band edge inside the image are wrong; the
            # image's own edges (lo == 0, hi == h) have the original's zero padding.
            if lo > 0:
                y = y[:, :, 1:]
            if hi < h:
                y = y[:, :, :-1]
            y = F.conv2d(y, expand.weight, bias, expand.stride, expand.padding)
            top = r0 - lo - (lo > 0)
            out[:, r0:r1] = y[:, :, top:top + r1 - r0].permute(0, 2, 3, 1)
        attention.gate_(out.permute(0, 3, 1, 2), scale)


class Mlp(nn.Module):
    """Two-layer feed-forward network with GELU, as in Swin/HAT."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def add_mlp_in_bands_(x: torch.Tensor, norm: nn.LayerNorm, mlp: Mlp, dtype: torch.dtype, band_rows: int) -> None:
    """``x += mlp(norm(x))`` on an image ``(b, h, w, c)``, band by band and in place (inference):
    the hidden layer only ever exists for one band."""
    for r0, r1 in bands(x.shape[1], band_rows):
        band = x[:, r0:r1]
        band += mlp(stream_layer_norm(norm, band, dtype))


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window self-attention in parallel with a channel
    attention conv block scaled by ``conv_scale``, then an MLP; both with residuals."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        mlp_ratio: float,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size must be in [0, window_size), got {shift_size} for window {window_size}')
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], inputs: AttentionInputs) -> torch.Tensor:
        """``x``: tokens ``(b, h*w, dim)`` of an image of size ``x_size``; same shape out."""
        if inputs.band_rows is not None:
            return self.forward_bands(x, x_size, inputs)
        h, w = x_size
        b, _, c = x.shape
        shift = self.shift_size
        shortcut = x
        x = stream_layer_norm(self.norm1, x, inputs.compute_dtype).view(b, h, w, c)

        conv_x = self.conv_block(x.permute(0, 3, 1, 2), self.conv_scale).permute(0, 2, 3, 1).reshape(b, h * w, c)

        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        attn_x = self.attn(x, inputs.rpi_sa, inputs.shift_masks if shift else None)
        if shift:
            attn_x = torch.roll(attn_x, shifts=(shift, shift), dims=(1, 2))

        x = shortcut + self.drop_path(attn_x.reshape(b, h * w, c)) + conv_x
        return x + self.drop_path(self.mlp(stream_layer_norm(self.norm2, x, inputs.compute_dtype)))

    def forward_bands(self, x: torch.Tensor, x_size: tuple[int, int], inputs: AttentionInputs) -> torch.Tensor:
        """:meth:`forward` for inference with bounded memory: the output (a new tensor) is the only
        full-size map made. LayerNorm, the conv branch, the attention and the MLP run band by band
        (bands of whole window rows; shifted bands wrap around the image), adding into it in place."""
        h, w = x_size
        b, _, c = x.shape
        shift, dtype = self.shift_size, inputs.compute_dtype
        image = x.view(b, h, w, c)

        def normed(r0: int, r1: int) -> torch.Tensor:
            return stream_layer_norm(self.norm1, wrapped_rows(image, r0, r1), dtype)

        out = torch.empty_like(image)
        self.conv_block.forward_bands(normed, out, self.conv_scale, inputs.band_rows)
        out += image
        for r0, r1 in bands(h, inputs.band_rows):
            band = normed(r0 + shift, r1 + shift)
            if shift:
                band = torch.roll(band, shifts=-shift, dims=2)
            band = self.attn(band, inputs.rpi_sa, inputs.shift_masks if shift else None, bottom=r1 == h)
            if shift:
                band = torch.roll(band, shifts=shift, dims=2)
            add_wrapped_rows_(out, r0 + shift, band)
        add_mlp_in_bands_(out, self.norm2, self.mlp, dtype, inputs.band_rows)
        return out.view(b, h * w, c)


class OCAB(nn.Module):
    """Overlapping cross-attention block: window queries attend to enlarged, overlapping
    key/value windows (zero beyond the image), then an MLP; both with residuals."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        overlap_ratio: float,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        mlp_ratio: float = 2.0,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        table_side = window_size + self.overlap_win_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_side * table_side, num_heads))
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attention = OverlapCrossAttention(dim, window_size, self.overlap_win_size, num_heads, qk_scale)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi: torch.Tensor,
                compute_dtype: Optional[torch.dtype] = None, band_rows: Optional[int] = None) -> torch.Tensor:
        if band_rows is not None:
            return self.forward_bands(x, x_size, rpi, compute_dtype or x.dtype, band_rows)
        h, w = x_size
        b, _, c = x.shape
        dtype = compute_dtype or x.dtype
        heads = self.attention.num_heads
        kernel_d = kernel_head_dim(c // heads, self.attention.fused_attn)
        qkv = F.linear(stream_layer_norm(self.norm1, x, dtype), *padded_projection(self.qkv, 3, heads, kernel_d))
        qkv = qkv.view(b, h, w, -1)
        attn_x = self.attention(qkv, self.relative_position_bias_table, rpi)
        x = self.proj(attn_x.reshape(b, h * w, c)) + x
        return x + self.mlp(stream_layer_norm(self.norm2, x, dtype))

    def forward_bands(self, x: torch.Tensor, x_size: tuple[int, int], rpi: torch.Tensor, dtype: torch.dtype,
                      band_rows: int) -> torch.Tensor:
        """:meth:`forward` for inference with bounded memory: queries, keys and values exist for
        one band of window rows at a time (keys/values with the enlargement's rows above and below)."""
        h, w = x_size
        b, _, c = x.shape
        image = x.view(b, h, w, c)
        heads = self.attention.num_heads
        pad = (self.overlap_win_size - self.window_size) // 2
        weight, bias = padded_projection(self.qkv, 3, heads, kernel_head_dim(c // heads, self.attention.fused_attn))
        width = weight.shape[0] // 3
        out = torch.empty_like(image)
        for r0, r1 in bands(h, band_rows):
            lo, hi = max(r0 - pad, 0), min(r1 + pad, h)
            qkv = F.linear(stream_layer_norm(self.norm1, image[:, lo:hi], dtype), weight, bias)
            # Keys/values padded by the enlargement: zeros beyond the image, neighbouring rows inside it.
            kv = F.pad(qkv[..., width:], (0, 0, pad, pad, pad - (r0 - lo), pad - (hi - r1)))
            q = qkv[:, r0 - lo:r1 - lo, :, :width].contiguous()
            del qkv
            attn_x = self.attention.attend_padded(q, kv, self.relative_position_bias_table, rpi)
            del q, kv
            torch.add(image[:, r0:r1], self.proj(attn_x), out=out[:, r0:r1])
        add_mlp_in_bands_(out, self.norm2, self.mlp, dtype, band_rows)
        return out.view(b, h * w, c)


class AttenBlocks(nn.Module):
    """The blocks of one RHAG: ``depth`` HABs (every second one shifted) and one OCAB."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        overlap_ratio: float,
        mlp_ratio: float,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Union[float, Sequence[float]] = 0.0,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            HAB(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else shift_size,
                compress_ratio=compress_ratio,
                squeeze_factor=squeeze_factor,
                conv_scale=conv_scale,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
            ) for i in range(depth)
        ])
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, qkv_bias, qk_scale, mlp_ratio)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], inputs: AttentionInputs) -> torch.Tensor:
        checkpointing = self.use_checkpoint and torch.is_grad_enabled()
        for blk in self.blocks:
            if checkpointing:
                x = checkpoint.checkpoint(blk, x, x_size, inputs, use_reentrant=False)
            else:
                x = blk(x, x_size, inputs)
        if checkpointing:
            return checkpoint.checkpoint(self.overlap_attn, x, x_size, inputs.rpi_oca, inputs.compute_dtype,
                                         use_reentrant=False)
        return self.overlap_attn(x, x_size, inputs.rpi_oca, inputs.compute_dtype, inputs.band_rows)


class RHAG(nn.Module):
    """Residual hybrid attention group: attention blocks, a 3x3 conv (``resi_connection='1conv'``)
    or nothing (``'identity'``), and a residual connection around both."""

    def __init__(self, dim: int, resi_connection: str = '1conv', **block_kwargs):
        super().__init__()
        self.dim = dim
        self.residual_group = AttenBlocks(dim=dim, **block_kwargs)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == '1conv' else nn.Identity()

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], inputs: AttentionInputs) -> torch.Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, x_size, inputs).transpose(1, 2).reshape(b, c, *x_size)
        if isinstance(self.conv, nn.Conv2d):  # reads the residual stream: stream precision
            y = stream_conv(self.conv, y)
        y = y.flatten(2).transpose(1, 2)
        if inputs.band_rows is not None and isinstance(self.conv, nn.Conv2d):  # inference: y is ours
            return y.add_(x)
        return y + x


class PatchEmbed(nn.Module):
    """Feature map ``(b, c, h, w)`` to tokens ``(b, h*w, c)``, optionally layer-normalised.

    HAT uses 1x1 "patches": no projection happens here, only the reshape (and the norm).
    """

    def __init__(self, embed_dim: int, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens in the residual stream's precision (:func:`stream_dtype`)."""
        x = x.flatten(2).transpose(1, 2).to(stream_dtype(x.dtype))
        return stream_layer_norm(self.norm, x, x.dtype) if self.norm is not None else x


def is_supported_scale(scale: int) -> bool:
    """HAT reconstructs at x1, x3 and any power of two."""
    return isinstance(scale, int) and scale >= 1 and (scale == 3 or scale & (scale - 1) == 0)


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler: one conv + PixelShuffle(2) per factor 2, or one PixelShuffle(3).

    Scale 1 gives an empty sequence (identity).
    """

    def __init__(self, scale: int, num_feat: int):
        if not is_supported_scale(scale):
            raise ValueError(f'upscale={scale} is not supported: use 1, 3 or a power of two (2, 4, 8, ...)')
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        super().__init__(*layers)
