"""HAT: Hybrid Attention Transformer for image super-resolution (Chen et al., CVPR 2023).

Read top-down as the paper's Figure 2: window helpers -> attention (window self-attention,
overlapping cross-attention) -> blocks (CAB, HAB, OCAB) -> group (RHAG) -> network (HAT).
``HAT`` takes the original release's constructor arguments and has its ``state_dict`` keys, so
published option files build it and published checkpoints load strictly with the same pixels.
The paper's ablations are constructor switches (``use_ocab``, ``use_cab``,
``use_channel_attention``, ``conv_scale``, ``overlap_ratio``, ``squeeze_factor``, ``window_size``).

Memory-bounded inference lives in ``hat.archs.banded`` (chosen with ``HAT.set_banded``), kernel
layouts and half-precision rules in ``hat.archs.kernels``.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.utils import checkpoint

from hat.archs import banded
from hat.archs.kernels import (
    autocast_off,
    cast,
    kernel_head_dim,
    padded_projection,
    scaled_dot_product,
    stream_conv,
    stream_dtype,
    stream_layer_norm,
)

IntOrPair = Union[int, Sequence[int]]

#: Mean of the DIV2K training images, subtracted from RGB inputs (as in the original).
RGB_MEAN = (0.4488, 0.4371, 0.4040)

#: Intermediate channels of the reconstruction head (fixed in the original).
NUM_FEAT = 64

#: Value added to the logits of token pairs from different regions of a shifted window
#: (the original uses -100, not -inf; kept for identical numbers).
SHIFT_MASK_VALUE = -100.0


# --------------------------------------------------------------------------- window helpers
def fused_attention_default() -> bool:
    """Whether new attention modules start on the fused path (env ``HAT_FUSED_ATTN``, default on)."""
    return os.environ.get('HAT_FUSED_ATTN', '1').strip().lower() not in ('0', 'false', 'no', 'off')


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Split ``(b, h, w, c)`` into ``(b * num_windows, window_size, window_size, c)``, row-major windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)  # (b, nh, ws, nw, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)  # (b*nh*nw, ws, ws, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(b * num_windows, ws, ws, c)`` back to ``(b, h, w, c)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)  # (b, nh, nw, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, c)  # (b, nh, ws, nw, ws, c) -> (b, h, w, c)


def unfold_windows(padded: torch.Tensor, window_size: int, overlap_size: int) -> torch.Tensor:
    """Enlarged windows ``(b * num_windows, overlap_size**2, c)`` of ``(b, h + 2p, w + 2p, c)``, an
    image padded by the enlargement ``p`` on every side; ordered like :func:`window_partition`."""
    c = padded.shape[-1]
    patches = padded.unfold(1, overlap_size, window_size).unfold(2, overlap_size, window_size)  # (b, nh, nw, c, o, o)
    return patches.permute(0, 1, 2, 4, 5, 3).reshape(-1, overlap_size * overlap_size, c)  # (b*nh*nw, o*o, c)


def relative_position_index_sa(window_size: int) -> torch.Tensor:
    """Index into the ``(2ws-1)**2`` bias table for every (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)  # (2, ws*ws)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (ws*ws, ws*ws, 2)
    rel = rel + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def relative_position_index_oca(window_size: int, overlap_size: int) -> torch.Tensor:
    """Index into the ``(ws + ows - 1)**2`` bias table for (query, enlarged-key) pairs.

    Reproduces the original formula exactly, including its offset: some indices are
    negative and wrap around the table under PyTorch indexing, as in the original.
    """
    ori = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    ext = torch.stack(torch.meshgrid(torch.arange(overlap_size), torch.arange(overlap_size), indexing='ij'))
    rel = (ext.flatten(1)[:, None, :] - ori.flatten(1)[:, :, None]).permute(1, 2, 0)  # (ws*ws, ows*ows, 2)
    rel = rel + (window_size - overlap_size + 1)
    return rel[..., 0] * (window_size + overlap_size - 1) + rel[..., 1]


def shifted_window_masks(window_size: int, shift_size: int) -> torch.Tensor:
    """Masks ``(3, ws*ws, ws*ws)`` of the last window column, the last window row and the corner window:
    0 within a region, -100 across. After the cyclic shift only these windows mix regions, and every
    window of one kind has the same mask whatever the image size; interior windows need none."""
    pos = torch.arange(window_size)
    band = (pos >= window_size - shift_size).long() + 1  # region 1 or 2 inside the last window row/column
    same = torch.zeros_like(band)
    ids = torch.stack([
        same[:, None] * 3 + band[None, :],  # last column: one region along rows
        band[:, None] * 3 + same[None, :],  # last row: one region along columns
        band[:, None] * 3 + band[None, :],  # corner
    ]).flatten(1)  # (3, ws*ws)
    different = ids[:, None, :] != ids[:, :, None]  # (3, ws*ws, ws*ws)
    return torch.zeros(different.shape).masked_fill_(different, SHIFT_MASK_VALUE)


def gather_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Relative position bias ``(heads, queries, keys)`` from a ``(entries, heads)`` table (negative
    indices wrap around the table, as with the original's advanced indexing)."""
    nq, nk = index.shape
    return table.t().index_select(1, index.reshape(-1) % table.shape[0]).view(-1, nq, nk)  # (heads, nq, nk)


def window_runs(count: int, masked_last: bool) -> list[tuple[int, int, bool]]:
    """Runs ``(start, stop, is_last)`` of window rows (or columns) sharing a mask kind; with ``masked_last``,
    the last one is a run of its own (the shifted-window mask applies)."""
    if not masked_last:
        return [(0, count, False)]
    return ([(0, count - 1, False)] if count > 1 else []) + [(count - 1, count, True)]


def cat(tensors: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """``torch.cat`` that hands a single tensor back without copying it."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float,
           dropout_p: float, fused: bool) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` over ``(windows, heads, tokens, d)``; ``bias`` ``(1, heads, N, M)``."""
    if fused:
        return scaled_dot_product(q, k, v, bias, scale, dropout_p)
    attn = (q * scale) @ k.transpose(-2, -1) + bias  # (windows, heads, N, M)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


class AttentionInputs(NamedTuple):
    """What every block reads besides its input, made once per forward by ``HAT.attention_inputs``."""

    window_size: int
    overlap_size: int  # side of OCAB's enlarged key/value windows
    rpi_sa: torch.Tensor
    rpi_oca: torch.Tensor
    shift_masks: torch.Tensor  # (3, N, N), see shifted_window_masks
    dtype: torch.dtype  # the branches' compute dtype (the residual stream may be wider: kernels.stream_dtype)


# --------------------------------------------------------------------------- attention
class WindowAttention(nn.Module):
    """(Shifted) window multi-head self-attention with relative position bias, (S)W-MSA in the paper."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused_attn = fused_attention_default()
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, ctx: AttentionInputs, shifted: bool = False,
                bottom: bool = True) -> torch.Tensor:
        """``x``: the (cyclically shifted) image ``(b, h, w, c)``, or a band of its rows (``bottom``: whether
        the band holds the image's last window row). Returns ``(b, h, w, c)``.

        Partition -> attend -> reverse, with the windows grouped by the shift mask they need (interior,
        last column, last row, corner), so the mask is never expanded to every window.
        """
        b, h, w, c = x.shape
        ws, heads, n = ctx.window_size, self.num_heads, ctx.window_size ** 2
        d = c // heads
        kd = kernel_head_dim(d, self.fused_attn)
        rows, cols = window_runs(h // ws, shifted and bottom), window_runs(w // ws, shifted)
        grid = x.view(b, h // ws, ws, w // ws, ws, c)  # (b, nh, ws, nw, ws, c)
        groups = [grid[:, r0:r1, :, c0:c1].permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)  # (b*rows*cols, N, c)
                  for r0, r1, _ in rows for c0, c1, _ in cols]
        counts = [g.shape[0] for g in groups]
        qkv = F.linear(cat(groups), *padded_projection(self.qkv, 3, heads, kd))  # (b*nW, N, 3*heads*kd)
        bias = gather_bias(self.relative_position_bias_table, ctx.rpi_sa)  # (heads, N, N)
        kinds = [2 * last_row + last_col for _, _, last_row in rows for _, _, last_col in cols]
        dropout_p = self.attn_drop if self.training else 0.0
        outs = []
        for kind, part in zip(kinds, qkv.split(counts)):
            q, k, v = part.view(-1, n, 3, heads, kd).permute(2, 0, 3, 1, 4)  # 3 x (windows, heads, N, kd)
            mask = bias if kind == 0 else bias + ctx.shift_masks[kind - 1]
            out = attend(q, k, v, mask[None], self.scale, dropout_p, self.fused_attn)
            outs.append(out[..., :d].transpose(1, 2))  # (windows, N, heads, d)
        out = self.proj_drop(self.proj(cat(outs).reshape(-1, n, c))).split(counts)  # groups of (windows, N, c)
        parts = iter(out)
        bands = [cat([next(parts).view(b, r1 - r0, c1 - c0, ws, ws, c) for c0, c1, _ in cols], dim=2)
                 for r0, r1, _ in rows]  # each (b, rows, nw, ws, ws, c)
        return cat(bands, dim=1).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)  # (b, nh, ws, nw, ws, c) -> image


class OverlapCrossAttention(nn.Module):
    """OCA: queries from ``ws x ws`` windows, keys/values from enlarged ``ows x ows`` windows centred
    on them (zeros beyond the image). The block's projections and bias table live in ``OCAB``."""

    def __init__(self, dim: int, num_heads: int, qk_scale: Optional[float] = None):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.fused_attn = fused_attention_default()

    def forward(self, q: torch.Tensor, kv: torch.Tensor, table: torch.Tensor, ctx: AttentionInputs) -> torch.Tensor:
        """Queries ``(b, h, w, heads * kd)`` against keys/values ``(b, h + 2p, w + 2p, 2 * heads * kd)``
        padded by the enlargement ``p`` on every side (a band of a larger image brings its neighbours'
        rows instead of zeros). Returns ``(b, h, w, dim)``."""
        b, h, w, width = q.shape
        ws, ows, heads = ctx.window_size, ctx.overlap_size, self.num_heads
        kd = width // heads
        q = window_partition(q, ws).view(-1, ws * ws, heads, kd).transpose(1, 2)  # (b*nW, heads, N, kd)
        kv = unfold_windows(kv, ws, ows)  # (b*nW, ows*ows, 2*heads*kd)
        k, v = kv.view(-1, ows * ows, 2, heads, kd).permute(2, 0, 3, 1, 4)  # 2 x (b*nW, heads, M, kd)
        bias = gather_bias(table, ctx.rpi_oca)[None]  # (1, heads, N, M)
        out = attend(q, k, v, bias, self.scale, 0.0, self.fused_attn)
        out = out[..., :self.dim // heads].transpose(1, 2).reshape(-1, ws, ws, self.dim)  # (b*nW, ws, ws, dim)
        return window_reverse(out, ws, h, w)


# --------------------------------------------------------------------------- blocks
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

    def gate(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The gate ``(b, c, 1, 1)`` of ``x``, which holds ``scale`` times the features, computed from the
        unscaled ones in at least float32 (autocast off: the squeeze path is tiny)."""
        _, squeeze, _, expand, _ = self.attention
        acc = stream_dtype(x.dtype)
        with autocast_off(x):
            z = x.mean((2, 3), keepdim=True, dtype=acc) / scale
            z = F.relu(F.conv2d(z, squeeze.weight.to(acc), cast(squeeze.bias, acc)))
            return torch.sigmoid(F.conv2d(z, expand.weight.to(acc), cast(expand.bias, acc))).to(x.dtype)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return x * self.gate(x, scale)


class CAB(nn.Module):
    """Channel attention block: conv (compress) - GELU - conv (expand) - channel attention (optional)."""

    def __init__(self, num_feat: int, compress_ratio: int = 3, squeeze_factor: int = 30,
                 use_channel_attention: bool = True):
        super().__init__()
        layers = [nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1), nn.GELU(),
                  nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1)]
        if use_channel_attention:
            layers.append(ChannelAttention(num_feat, squeeze_factor))
        self.cab = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``scale * cab(x)``, ``x`` ``(b, c, h, w)``. The scale is applied before the expanding conv, so its
        large unscaled output (HAT weights it by ``conv_scale=0.01``) never exists in half precision."""
        compress, act, expand, *attention = self.cab
        if scale == 0:  # the branch is switched off; the gate would divide by zero
            return torch.zeros_like(x)
        y = act(compress(x)) * scale
        y = F.conv2d(y, expand.weight, None if expand.bias is None else expand.bias * scale, expand.stride,
                     expand.padding)
        return attention[0](y, scale) if attention else y


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


class HAB(nn.Module):
    """Hybrid attention block: ``X_M = (S)W-MSA(LN(X)) + conv_scale * CAB(LN(X)) + X``,
    ``Y = MLP(LN(X_M)) + X_M``. Without CAB (``use_cab=False``) the conv term is absent."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, mlp_ratio: float, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, use_cab: bool = True, use_channel_attention: bool = True):
        super().__init__()
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor, use_channel_attention) if use_cab else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], ctx: AttentionInputs) -> torch.Tensor:
        """``x``: tokens ``(b, h*w, c)`` of an image of size ``x_size``; same shape out."""
        (h, w), (b, _, c), s = x_size, x.shape, self.shift_size
        shortcut = x
        x = stream_layer_norm(self.norm1, x, ctx.dtype).view(b, h, w, c)  # LN(X) as an image
        conv_x = None
        if self.conv_block is not None:
            conv_x = self.conv_block(x.permute(0, 3, 1, 2), self.conv_scale)  # (b, c, h, w)
            conv_x = conv_x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # tokens (b, h*w, c)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        attn_x = self.attn(x, ctx, shifted=bool(s))  # (b, h, w, c)
        if s:
            attn_x = torch.roll(attn_x, shifts=(s, s), dims=(1, 2))
        x = shortcut + self.drop_path(attn_x.reshape(b, h * w, c))  # tokens (b, h*w, c)
        if conv_x is not None:
            x = x + conv_x
        return x + self.drop_path(self.mlp(stream_layer_norm(self.norm2, x, ctx.dtype)))


class OCAB(nn.Module):
    """Overlapping cross-attention block: ``X_M = OCA(LN(X)) + X``, ``Y = MLP(LN(X_M)) + X_M``; window
    queries attend to enlarged, overlapping key/value windows."""

    def __init__(self, dim: int, window_size: int, overlap_ratio: float, num_heads: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, mlp_ratio: float = 2.0):
        super().__init__()
        overlap_size = int(window_size * overlap_ratio) + window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((window_size + overlap_size - 1) ** 2,
                                                                     num_heads))
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attention = OverlapCrossAttention(dim, num_heads, qk_scale)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def qkv_projection(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The qkv projection with heads padded for the attention kernel (``kernels.padded_projection``)."""
        heads = self.attention.num_heads
        return padded_projection(self.qkv, 3, heads, kernel_head_dim(self.attention.dim // heads,
                                                                      self.attention.fused_attn))

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], ctx: AttentionInputs) -> torch.Tensor:
        """``x``: tokens ``(b, h*w, c)`` of an image of size ``x_size``; same shape out."""
        (h, w), (b, _, c) = x_size, x.shape
        p = (ctx.overlap_size - ctx.window_size) // 2
        qkv = F.linear(stream_layer_norm(self.norm1, x, ctx.dtype), *self.qkv_projection())
        qkv = qkv.view(b, h, w, -1)  # (b, h, w, 3 * heads * kd)
        q, kv = qkv.split([qkv.shape[-1] // 3, 2 * qkv.shape[-1] // 3], dim=-1)  # (b, h, w, heads*kd), (.., 2*..)
        attn_x = self.attention(q, F.pad(kv, (0, 0, p, p, p, p)), self.relative_position_bias_table, ctx)
        x = self.proj(attn_x.reshape(b, h * w, c)) + x  # tokens (b, h*w, c)
        return x + self.mlp(stream_layer_norm(self.norm2, x, ctx.dtype))


# --------------------------------------------------------------------------- group
class AttenBlocks(nn.Module):
    """The blocks of one RHAG: ``depth`` HABs (every second one shifted), then one OCAB (unless
    ``use_ocab=False``)."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, shift_size: int,
                 overlap_ratio: float, mlp_ratio: float, drop_path: Sequence[float], qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, use_checkpoint: bool = False, use_ocab: bool = True,
                 **hab_kwargs):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            HAB(dim, num_heads, window_size, 0 if i % 2 == 0 else shift_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop_path=drop_path[i], **hab_kwargs)
            for i in range(depth)
        ])
        self.overlap_attn = (OCAB(dim, window_size, overlap_ratio, num_heads, qkv_bias, qk_scale, mlp_ratio)
                             if use_ocab else None)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], ctx: AttentionInputs) -> torch.Tensor:
        checkpointing = self.use_checkpoint and torch.is_grad_enabled()
        for block in [*self.blocks, self.overlap_attn]:
            if block is None:
                continue
            if checkpointing:
                x = checkpoint.checkpoint(block, x, x_size, ctx, use_reentrant=False)
            else:
                x = block(x, x_size, ctx)
        return x


class RHAG(nn.Module):
    """Residual hybrid attention group: HABs, an OCAB, a 3x3 conv (``resi_connection='1conv'``) or
    nothing (``'identity'``), and a residual connection around them all."""

    def __init__(self, dim: int, resi_connection: str = '1conv', **block_kwargs):
        super().__init__()
        self.residual_group = AttenBlocks(dim=dim, **block_kwargs)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == '1conv' else nn.Identity()

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], ctx: AttentionInputs) -> torch.Tensor:
        """``x``: tokens ``(b, h*w, c)``; same shape out."""
        b, _, c = x.shape
        y = self.residual_group(x, x_size, ctx).transpose(1, 2).reshape(b, c, *x_size)  # (b, c, h, w)
        if isinstance(self.conv, nn.Conv2d):  # reads the residual stream: stream precision
            y = stream_conv(self.conv, y)
        return y.flatten(2).transpose(1, 2) + x  # (b, h*w, c)


# --------------------------------------------------------------------------- network
class PatchEmbed(nn.Module):
    """Feature map ``(b, c, h, w)`` to tokens ``(b, h*w, c)`` (HAT's "patches" are single pixels),
    optionally layer-normalised; tokens in the residual stream's precision (``kernels.stream_dtype``)."""

    def __init__(self, embed_dim: int, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2).to(stream_dtype(x.dtype))  # (b, h*w, c)
        return stream_layer_norm(self.norm, x, x.dtype) if self.norm is not None else x


def is_supported_scale(scale: int) -> bool:
    """HAT reconstructs at x1, x3 and any power of two."""
    return isinstance(scale, int) and scale >= 1 and (scale == 3 or scale & (scale - 1) == 0)


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler: one conv + PixelShuffle(2) per factor 2, or one PixelShuffle(3);
    scale 1 gives an empty sequence (identity)."""

    def __init__(self, scale: int, num_feat: int):
        if not is_supported_scale(scale):
            raise ValueError(f'upscale={scale} is not supported: use 1, 3 or a power of two (2, 4, 8, ...)')
        factors = [3] if scale == 3 else [2] * int(math.log2(scale))
        super().__init__(*[layer for f in factors
                           for layer in (nn.Conv2d(num_feat, f * f * num_feat, 3, 1, 1), nn.PixelShuffle(f))])


def window_padding(side: int, multiple: int) -> int:
    """Pixels that bring ``side`` up to a multiple of ``multiple`` (shape arithmetic only, so it
    also works on the symbolic sizes of ``torch.export``)."""
    return (multiple - side % multiple) % multiple


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad ``x`` (NCHW) right and bottom so height and width are multiples of ``multiple``.

    Equals the original's ``F.pad(x, (0, pw, 0, ph), 'reflect')`` whenever that is defined;
    pads larger than the image are reflected repeatedly, and a 1-pixel side is replicated.
    Under ``torch.export`` it is that one reflect pad (exported graphs take inputs of at least
    two windows per side).
    """
    if torch.compiler.is_exporting():
        h, w = x.shape[-2:]
        return F.pad(x, (0, window_padding(w, multiple), 0, window_padding(h, multiple)), mode='reflect')
    for dim in (-2, -1):
        pad = window_padding(x.shape[dim], multiple)
        while pad:
            step = min(pad, x.shape[dim] - 1)
            mode = 'reflect' if step else 'replicate'
            step = step or pad
            x = F.pad(x, (0, step, 0, 0) if dim == -1 else (0, 0, 0, step), mode=mode)
            pad -= step
    return x


def _pair(value: IntOrPair) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


@ARCH_REGISTRY.register()
class HAT(nn.Module):
    """Hybrid Attention Transformer.

    Args:
        img_size: Training patch size (LR). Only decides whether windows are shifted
            (not when the patch is no larger than a window) and the size of ``ape``.
        patch_size: Kept for compatibility; HAT embeds single pixels.
        in_chans: Image channels (3 for RGB, 1 for gray).
        embed_dim: Feature channels of the transformer body.
        depths: Number of HABs in each residual group (RHAG).
        num_heads: Attention heads in each RHAG; each must divide ``embed_dim``.
        window_size: Side of the attention windows. Default 16 (the original's 7 cannot
            run: see ``overlap_ratio``).
        compress_ratio: Channel compression of the conv branch of a HAB.
        squeeze_factor: Channel squeeze of its channel attention.
        conv_scale: Weight alpha of the conv branch relative to attention (0 switches it off).
        overlap_ratio: Overlap gamma: OCAB enlarges key/value windows by ``int(window_size *
            overlap_ratio)``, which must be even (half on each side); 0 gives same-size windows.
        mlp_ratio: Hidden width of the MLPs relative to ``embed_dim``.
        qkv_bias: Learnable bias on the query/key/value projections.
        qk_scale: Attention scale; default ``head_dim ** -0.5``.
        drop_rate, attn_drop_rate, drop_path_rate: Dropout, attention dropout and
            stochastic depth (linearly increasing over blocks) during training.
        ape: Learned absolute position embedding (inputs must then be ``img_size``).
        patch_norm: LayerNorm after the embedding.
        use_checkpoint: Gradient checkpointing per block (saves memory in training).
        upscale: Scale factor: 1, 3 or a power of two.
        img_range: Pixel range the network works in (1 or 255); inputs are in [0, 1].
        upsampler: Reconstruction head; only ``'pixelshuffle'`` exists in HAT.
        resi_connection: ``'1conv'`` or ``'identity'`` at the end of each RHAG and body.
        use_ocab, use_cab, use_channel_attention: The paper's ablation switches: an OCAB in each
            RHAG, a CAB in each HAB, channel attention in each CAB. A switched-off module has no
            parameters.
    """

    def __init__(
        self,
        img_size: IntOrPair = 64,
        patch_size: IntOrPair = 1,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 16,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = 'pixelshuffle',
        resi_connection: str = '1conv',
        use_ocab: bool = True,
        use_cab: bool = True,
        use_channel_attention: bool = True,
    ):
        super().__init__()
        depths, num_heads = list(depths), list(num_heads)
        patches = tuple(s // p for s, p in zip(_pair(img_size), _pair(patch_size)))
        _check_config(in_chans, embed_dim, depths, num_heads, window_size, compress_ratio,
                      squeeze_factor if use_cab and use_channel_attention else 1, overlap_ratio, mlp_ratio, upscale,
                      upsampler, resi_connection, patches)
        self.window_size = window_size
        self.overlap_size = window_size + int(overlap_ratio * window_size)
        self.in_chans = in_chans
        self.upscale = upscale
        self.img_range = img_range
        self.embed_dim = embed_dim
        self.ape = ape
        self.patches_resolution = patches
        #: Pixels per band of memory-bounded inference, or None for the whole image at once (see set_banded).
        self.band_tokens: Optional[int] = None
        mean = RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        # 1-D so the channels-last conversion below leaves it alone (DDP cannot sync a (1, c, 1, 1)
        # channels-last buffer: its strides make elements overlap).
        self.register_buffer('mean', torch.tensor(mean), persistent=False)
        self.register_buffer('relative_position_index_SA', relative_position_index_sa(window_size))
        self.register_buffer('relative_position_index_OCA', relative_position_index_oca(window_size,
                                                                                       self.overlap_size))
        # Computed once here (never inside forward), so one model can serve several threads.
        self.register_buffer('shift_masks', shifted_window_masks(window_size, window_size // 2), persistent=False)

        # 1. shallow feature extraction
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)

        # 2. deep feature extraction
        self.patch_embed = PatchEmbed(embed_dim, norm=patch_norm)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, patches[0] * patches[1], embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)
        shift_size = 0 if min(patches) <= window_size else window_size // 2  # no shift if a patch is one window
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.layers = nn.ModuleList([
            RHAG(embed_dim, resi_connection, depth=depth, num_heads=heads, window_size=window_size,
                 shift_size=shift_size, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor,
                 conv_scale=conv_scale, overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                 qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                 drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], use_checkpoint=use_checkpoint,
                 use_ocab=use_ocab, use_cab=use_cab, use_channel_attention=use_channel_attention)
            for i, (depth, heads) in enumerate(zip(depths, num_heads))
        ])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == '1conv' \
            else nn.Identity()

        # 3. high-quality image reconstruction
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, NUM_FEAT, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(upscale, NUM_FEAT)
        self.conv_last = nn.Conv2d(NUM_FEAT, in_chans, 3, 1, 1)

        self.apply(self._init_weights)
        # Channels-last conv weights make every conv read and write the (b, h*w, c) token
        # layout directly: token <-> image reshapes become views, and the narrow convs of
        # the channel attention blocks run faster on CPU. state_dict shapes are unchanged.
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return {'absolute_pos_embed'}

    def no_weight_decay_keywords(self) -> set[str]:
        return {'relative_position_bias_table'}

    def set_fused_attention(self, enabled: bool) -> None:
        """Run attention through ``scaled_dot_product_attention`` (True) or explicitly (False)."""
        for module in self.modules():
            if hasattr(module, 'fused_attn'):
                module.fused_attn = bool(enabled)

    @property
    def fused_attention(self) -> bool:
        """Whether every attention module is on the fused path (see :meth:`set_fused_attention`)."""
        return all(m.fused_attn for m in self.modules() if hasattr(m, 'fused_attn'))

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        for layer in self.layers:
            layer.residual_group.use_checkpoint = bool(enabled)

    def set_banded(self, band_tokens: Optional[int] = banded.BAND_TOKENS) -> None:
        """Run inference in bands of about ``band_tokens`` pixels (``hat.archs.banded``: memory bounded
        whatever the image size, no autograd), or every layer on the whole image (None)."""
        if band_tokens is not None and (isinstance(band_tokens, bool) or int(band_tokens) < 1):
            raise ValueError(f'band_tokens must be a positive number of pixels or None, got {band_tokens!r}')
        self.band_tokens = None if band_tokens is None else int(band_tokens)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The size an ``h x w`` input runs at: both sides padded up to a multiple of the window."""
        return h + window_padding(h, self.window_size), w + window_padding(w, self.window_size)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the network cannot take."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'HAT expects a torch.Tensor, got {type(x).__name__}')
        if not x.is_floating_point():
            raise TypeError(f'HAT expects a floating-point tensor in [0, 1], got {x.dtype}: '
                            f'convert with x.float() / 255')
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'HAT expects input of shape (batch, {self.in_chans}, height, width), '
                             f'got {tuple(x.shape)}')
        if x.shape[-2] < 1 or x.shape[-1] < 1 or x.shape[0] < 1:
            raise ValueError(f'input has an empty dimension: {tuple(x.shape)}')

    def attention_inputs(self, x: torch.Tensor) -> AttentionInputs:
        """The per-forward values every block reads, for the feature map ``x`` ``(b, c, h, w)``."""
        return AttentionInputs(self.window_size, self.overlap_size, self.relative_position_index_SA,
                               self.relative_position_index_OCA, self.shift_masks, x.dtype)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Shallow features ``(b, c, h, w)`` to body tokens ``(b, h*w, c)`` (patch embedding, ``ape``)."""
        tokens = self.patch_embed(x)
        if self.ape:
            if tokens.shape[1] != self.absolute_pos_embed.shape[1]:
                raise ValueError(f'this model has an absolute position embedding (ape=True) for '
                                 f'{self.patches_resolution} inputs; got {tuple(x.shape[-2:])} after padding')
            tokens = tokens + self.absolute_pos_embed
        return self.pos_drop(tokens)

    def unembed(self, tokens: torch.Tensor, x_size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """Body tokens ``(b, h*w, c)`` to a normalised feature map ``(b, c, h, w)`` in ``dtype``."""
        tokens = stream_layer_norm(self.norm, tokens, dtype)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.embed_dim, *x_size)  # (b, c, h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep feature extraction: the RHAGs on ``(b, embed_dim, h, w)``, sides multiples of the window."""
        ctx = self.attention_inputs(x)
        x_size = tuple(x.shape[-2:])
        tokens = self.embed(x)
        for layer in self.layers:
            tokens = layer(tokens, x_size, ctx)
        return self.unembed(tokens, x_size, ctx.dtype)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an input whose sides are multiples of ``window_size``; output not cropped."""
        mean = self.mean.to(x.dtype).view(1, -1, 1, 1)  # (1, in_chans, 1, 1)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)  # 1. shallow features
        x = self.conv_after_body(self.forward_features(x)) + x  # 2. deep features, long skip
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))  # 3. reconstruction
        return x / self.img_range + mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``(b, in_chans, h, w)`` in [0, 1] to ``(b, in_chans, h*upscale, w*upscale)``.

        Any ``h x w``: padded to the window and cropped back. An input of another floating dtype than
        the weights is computed in the weights' dtype and returned in its own.
        """
        self.check_input(x)
        (h, w), dtype = x.shape[-2:], x.dtype
        x = self._pad_input(x)
        if self.band_tokens is not None:
            out = banded.forward_padded_in_bands(self, x, self.band_tokens)
        else:
            out = self.forward_padded(x)
        return self._crop_output(out, h, w, dtype)

    # Checking, padding and cropping run eagerly under torch.compile: the compiled graph then
    # sees plain (padded) sizes, which keeps dynamic-shape tracing fast and its guards few.
    @torch.compiler.disable
    def _pad_input(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(x.to(self.conv_first.weight.dtype), self.window_size)

    @torch.compiler.disable
    def _crop_output(self, out: torch.Tensor, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        # The convs run channels-last; hand back the usual contiguous NCHW layout.
        return out[..., :h * self.upscale, :w * self.upscale].to(dtype).contiguous()


def _check_config(in_chans, embed_dim, depths, num_heads, window_size, compress_ratio, squeeze_factor,
                  overlap_ratio, mlp_ratio, upscale, upsampler, resi_connection, patches) -> None:
    """Reject configurations the original accepts but cannot run, or silently mis-builds."""
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f'in_chans must be a positive integer (3 for RGB, 1 for gray), got {in_chans!r}')
    if len(depths) != len(num_heads):
        raise ValueError(f'depths and num_heads need one entry per residual group; got {len(depths)} depths '
                         f'{depths} and {len(num_heads)} num_heads {num_heads}')
    if not depths or any(not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f'depths must be a non-empty list of positive integers, got {depths}')
    for heads in num_heads:
        if not isinstance(heads, int) or heads < 1 or embed_dim % heads:
            raise ValueError(f'embed_dim={embed_dim} is not divisible by num_heads entry {heads}: '
                             f'choose num_heads that divide embed_dim (e.g. 6 for 180)')
    if not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f'window_size must be a positive integer, got {window_size!r}')
    if embed_dim // compress_ratio < 1 or embed_dim // squeeze_factor < 1:
        raise ValueError(f'compress_ratio={compress_ratio} and squeeze_factor={squeeze_factor} must not exceed '
                         f'embed_dim={embed_dim}')
    if int(embed_dim * mlp_ratio) < 1:
        raise ValueError(f'mlp_ratio={mlp_ratio} gives an empty MLP for embed_dim={embed_dim}')
    enlarge = int(window_size * overlap_ratio)
    if overlap_ratio < 0 or enlarge % 2:
        raise ValueError(f'overlap_ratio={overlap_ratio} enlarges the {window_size}-pixel windows by {enlarge} pixels; '
                         f'it must be an even number (e.g. window_size=16 with overlap_ratio=0.5)')
    if not is_supported_scale(upscale):
        raise ValueError(f'upscale={upscale!r} is not supported: use 1, 3 or a power of two (2, 4, 8, ...)')
    if upsampler != 'pixelshuffle':
        raise ValueError(f"upsampler={upsampler!r} is not supported: HAT only has 'pixelshuffle' "
                         f'(the original silently skips reconstruction for any other value)')
    if resi_connection not in ('1conv', 'identity'):
        raise ValueError(f"resi_connection={resi_connection!r} is not supported: use '1conv' or 'identity'")
    if min(patches) < window_size:
        raise ValueError(f'img_size / patch_size = {patches} is smaller than window_size={window_size}; '
                         f'use img_size >= window_size')
