"""The original HAT formulation, for benchmarks only: what this project is compared against.

``OriginalHAT`` computes HAT the way the authors' release does at inference, step by step, so
its speed and memory are those of that formulation: attention as explicit ``q @ k^T`` with the
relative position bias and the shifted-window mask added as separate tensors (the mask
expanded to every window), softmax, then ``@ v``; the overlapping cross-attention cuts its
key/value windows with ``unfold`` over the concatenated k and v maps; every window partition,
roll and permute materialises its copy. It takes the same constructor arguments and has the
same ``state_dict`` keys as :class:`hat.HAT` (and the published checkpoints), so one set of
weights loads into both; ``tests/test_original_hat.py`` checks that it reproduces the original
release's recorded outputs and this project's network to 1e-9 in float64.

Inference only (dropout, stochastic depth and checkpointing do nothing here), and like the
original network it needs inputs whose sides are multiples of ``window_size``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Mean of the DIV2K training images, subtracted from RGB inputs.
RGB_MEAN = (0.4488, 0.4371, 0.4040)

#: Channels of the reconstruction head.
NUM_FEAT = 64


def to_windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(b, h, w, c)`` -> ``(b * windows, ws * ws, c)``, windows in row-major order (one copy)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(-1, ws * ws, c)


def from_windows(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_windows`: back to ``(b, h, w, c)`` (one copy)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(-1, h, w, c)


def rpi_self_attention(ws: int) -> torch.Tensor:
    """``(ws*ws, ws*ws)`` indices into the ``(2ws-1)**2`` bias table: query minus key position."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + ws - 1
    dx = xs[:, None] - xs[None, :] + ws - 1
    return dy * (2 * ws - 1) + dx


def rpi_overlapping(ws: int, ows: int) -> torch.Tensor:
    """``(ws*ws, ows*ows)`` indices into the ``(ws+ows-1)**2`` table: key (enlarged window) minus query position."""
    qy, qx = (t.flatten() for t in torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij'))
    ky, kx = (t.flatten() for t in torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing='ij'))
    dy = ky[None, :] - qy[:, None] + ws - ows + 1
    dx = kx[None, :] - qx[:, None] + ws - ows + 1
    return dy * (ws + ows - 1) + dx


def shift_attention_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """``(windows, ws*ws, ws*ws)``: 0 between pixels of one region of the rolled image, -100 across regions."""
    regions = torch.zeros(1, h, w, 1)
    bands = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    label = 0
    for rows in bands:
        for cols in bands:
            regions[:, rows, cols, :] = label
            label += 1
    labels = to_windows(regions, ws).squeeze(-1)  # windows, ws*ws
    differs = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(differs.shape).masked_fill(differs, -100.0)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: ``x * sigmoid(conv(relu(conv(mean(x)))))``."""

    def __init__(self, num_feat: int, squeeze_factor: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze_factor, 1), nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: 3x3 conv down, GELU, 3x3 conv up, channel gate."""

    def __init__(self, num_feat: int, compress_ratio: int, squeeze_factor: int):
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1), nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1), ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def explicit_attention(q, k, v, scale: float, table: nn.Parameter, rpi: torch.Tensor,
                       mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``softmax(q k^T * scale + bias [+ mask]) v`` with every intermediate materialised.

    q: ``(windows, heads, nq, d)``, k/v: ``(windows, heads, nk, d)``, ``mask``: ``(mask windows, nq, nk)``
    repeated over the batch.
    """
    windows, heads, nq, _ = q.shape
    nk = k.shape[2]
    attn = (q * scale) @ k.transpose(-2, -1)
    bias = table[rpi.view(-1)].view(nq, nk, -1).permute(2, 0, 1).contiguous()
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(windows // nw, nw, heads, nq, nk) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, nq, nk)
    attn = torch.softmax(attn, dim=-1)
    return attn @ v


class WindowAttention(nn.Module):
    """(Shifted) window self-attention with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool, qk_scale: Optional[float]):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rpi: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        windows, n, c = x.shape
        qkv = self.qkv(x).reshape(windows, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = explicit_attention(qkv[0], qkv[1], qkv[2], self.scale, self.relative_position_bias_table, rpi, mask)
        return self.proj(out.transpose(1, 2).reshape(windows, n, c))


class HAB(nn.Module):
    """Hybrid attention block: x + attention(norm(x)) + conv_scale * CAB(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: Optional[float]):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi: torch.Tensor, mask: torch.Tensor):
        h, w = x_size
        b, _, c = x.shape
        ws, shift = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        conv_x = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous().view(b, h * w, c)
        shifted = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift else x
        attn_windows = self.attn(to_windows(shifted, ws), rpi, mask if shift else None)
        attn_x = from_windows(attn_windows, ws, h, w)
        if shift:
            attn_x = torch.roll(attn_x, shifts=(shift, shift), dims=(1, 2))
        x = shortcut + attn_x.view(b, h * w, c) + conv_x * self.conv_scale
        return x + self.mlp(self.norm2(x))


class OCAB(nn.Module):
    """Overlapping cross-attention: queries from each window, keys/values from the window enlarged by
    ``int(window_size * overlap_ratio)`` pixels (zero outside the image), then an MLP."""

    def __init__(self, dim: int, window_size: int, overlap_ratio: float, num_heads: int, qkv_bias: bool,
                 qk_scale: Optional[float], mlp_ratio: float):
        super().__init__()
        self.window_size = window_size
        self.overlap_size = window_size + int(window_size * overlap_ratio)
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        table_side = window_size + self.overlap_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_side ** 2, num_heads))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi: torch.Tensor) -> torch.Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws, ows, heads = self.window_size, self.overlap_size, self.num_heads
        d = c // heads
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        qkv = self.qkv(x).reshape(b, h, w, 3, c).permute(3, 0, 4, 1, 2)  # 3, b, c, h, w
        q_windows = to_windows(qkv[0].permute(0, 2, 3, 1), ws)  # b*nw, ws*ws, c
        kv = torch.cat((qkv[1], qkv[2]), dim=1)  # b, 2c, h, w
        kv_windows = F.unfold(kv, kernel_size=ows, stride=ws, padding=(ows - ws) // 2)  # b, 2c*ows*ows, nw
        nw = kv_windows.shape[-1]
        # (b, [k|v], c, ows*ows, nw) -> ([k|v], b*nw, ows*ows, c)
        kv_windows = kv_windows.view(b, 2, c, ows * ows, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw, ows * ows, c)
        q = q_windows.reshape(b * nw, ws * ws, heads, d).permute(0, 2, 1, 3)
        k = kv_windows[0].reshape(b * nw, ows * ows, heads, d).permute(0, 2, 1, 3)
        v = kv_windows[1].reshape(b * nw, ows * ows, heads, d).permute(0, 2, 1, 3)
        out = explicit_attention(q, k, v, self.scale, self.relative_position_bias_table, rpi)
        out = from_windows(out.transpose(1, 2).reshape(b * nw, ws * ws, c), ws, h, w).view(b, h * w, c)
        x = self.proj(out) + shortcut
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    """The HABs of one group (shift on every second one) followed by one OCAB."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, shift_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, overlap_ratio: float, mlp_ratio: float, qkv_bias: bool,
                 qk_scale: Optional[float]):
        super().__init__()
        self.blocks = nn.ModuleList([
            HAB(dim, num_heads, window_size, shift_size if i % 2 else 0, compress_ratio, squeeze_factor,
                conv_scale, mlp_ratio, qkv_bias, qk_scale)
            for i in range(depth)])
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, qkv_bias, qk_scale, mlp_ratio)

    def forward(self, x, x_size, rpi_sa, rpi_oca, mask):
        for block in self.blocks:
            x = block(x, x_size, rpi_sa, mask)
        return self.overlap_attn(x, x_size, rpi_oca)


class RHAG(nn.Module):
    """Residual hybrid attention group: blocks, a 3x3 conv on the image layout, plus the group's input."""

    def __init__(self, dim: int, resi_connection: str, **block_args):
        super().__init__()
        self.residual_group = AttenBlocks(dim, **block_args)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == '1conv' else nn.Identity()

    def forward(self, x, x_size, rpi_sa, rpi_oca, mask):
        b, _, c = x.shape
        y = self.residual_group(x, x_size, rpi_sa, rpi_oca, mask)
        y = y.transpose(1, 2).contiguous().view(b, c, *x_size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """``(b, c, h, w)`` -> ``(b, h*w, c)`` tokens, optionally layer-normalised."""

    def __init__(self, dim: int, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampling: (conv to 4x channels, shuffle by 2) per factor 2, or one by 3."""

    def __init__(self, scale: int, num_feat: int):
        layers = []
        if scale & (scale - 1) == 0:  # 1, 2, 4, 8, ... (no layer for 1)
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f'upscale={scale} is not supported: use 3 or a power of two')
        super().__init__(*layers)


class OriginalHAT(nn.Module):
    """HAT as the original release computes it (inference); arguments and state_dict keys as :class:`hat.HAT`.

    ``drop_rate``, ``attn_drop_rate``, ``drop_path_rate`` and ``use_checkpoint`` only act in
    training and are accepted for compatibility; ``upsampler`` must be ``'pixelshuffle'``.
    """

    def __init__(self, img_size=64, patch_size=1, in_chans: int = 3, embed_dim: int = 96,
                 depths: Sequence[int] = (6, 6, 6, 6), num_heads: Sequence[int] = (6, 6, 6, 6),
                 window_size: int = 16, compress_ratio: int = 3, squeeze_factor: int = 30, conv_scale: float = 0.01,
                 overlap_ratio: float = 0.5, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, ape: bool = False, patch_norm: bool = True,
                 use_checkpoint: bool = False, upscale: int = 2, img_range: float = 1.0,
                 upsampler: str = 'pixelshuffle', resi_connection: str = '1conv'):
        super().__init__()
        if upsampler != 'pixelshuffle':
            raise ValueError(f"upsampler={upsampler!r}: only 'pixelshuffle' is implemented")
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        patches = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.window_size = window_size
        self.img_range = img_range
        self.embed_dim = embed_dim
        self.ape = ape
        overlap_size = window_size + int(window_size * overlap_ratio)
        self.register_buffer('mean', torch.tensor(RGB_MEAN if in_chans == 3 else (0.0,) * in_chans).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer('relative_position_index_SA', rpi_self_attention(window_size))
        self.register_buffer('relative_position_index_OCA', rpi_overlapping(window_size, overlap_size))
        # The original shifts windows only when the training patch is larger than one window.
        self.shift_size = 0 if min(patches) <= window_size else window_size // 2

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, patches[0] * patches[1], embed_dim))
        self.layers = nn.ModuleList([
            RHAG(embed_dim, resi_connection, depth=depth, num_heads=heads, window_size=window_size,
                 shift_size=self.shift_size, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor,
                 conv_scale=conv_scale, overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                 qk_scale=qk_scale)
            for depth, heads in zip(depths, num_heads)])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == '1conv' \
            else nn.Identity()
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, NUM_FEAT, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(upscale, NUM_FEAT)
        self.conv_last = nn.Conv2d(NUM_FEAT, in_chans, 3, 1, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        mask = None
        if self.shift_size:  # float32 like the original's, whatever the compute dtype
            mask = shift_attention_mask(h, w, self.window_size, self.shift_size).to(x.device)
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        for layer in self.layers:
            x = layer(x, (h, w), self.relative_position_index_SA, self.relative_position_index_OCA, mask)
        x = self.norm(x)
        return x.transpose(1, 2).contiguous().view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.window_size or x.shape[-1] % self.window_size:
            raise ValueError(f'the original HAT needs sides that are multiples of window_size={self.window_size}, '
                             f'got {tuple(x.shape[-2:])}: pad the input first')
        mean = self.mean.type_as(x)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        return x / self.img_range + mean
