"""Attention primitives of HAT: windows, relative position indices, masks, and the two
attention modules (window self-attention and overlapping cross-attention).

Both attention modules compute ``softmax(q k^T * scale + bias) v`` where ``bias`` holds the
relative position bias (plus, for shifted windows, the -100 region mask of Swin/HAT). The
product runs either through ``torch.nn.functional.scaled_dot_product_attention`` with
``bias`` as an additive float mask (the default, "fused"), or through an explicit
matmul-softmax-matmul ("explicit", the original formulation). Choose per model with
``HAT.set_fused_attention(False)``, or for every model built afterwards with the
environment variable ``HAT_FUSED_ATTN=0``.

Layout choices for speed (both paths share them; only the softmax product differs):
windows are cut from the normalised image in one copy before the qkv projection, whose
output then serves ``q, k, v`` as strided views in the kernels' ``(windows, heads,
tokens, head_dim)`` layout; the fused path pads each head with zeros to a multiple of 8
through the projection's weights (CUDA's memory-efficient kernel needs it for HAT's 30,
and the 576-wide projection GEMM is faster than the 540-wide one); shifted windows are
attended in up to four blocks (interior, last window column, last window row, corner),
each with a single ``(heads, N, N)`` bias, so the -100 mask is never expanded to every
window.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

#: Value added to the logits of token pairs from different regions of a shifted window
#: (the original uses -100, not -inf; keep it for identical numbers).
SHIFT_MASK_VALUE = -100.0


def fused_attention_default() -> bool:
    """Whether new attention modules start on the fused path (env ``HAT_FUSED_ATTN``, default on)."""
    return os.environ.get('HAT_FUSED_ATTN', '1').strip().lower() not in ('0', 'false', 'no', 'off')


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Split ``(b, h, w, c)`` into ``(b * num_windows, window_size, window_size, c)``, row-major windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(b * num_windows, ws, ws, c)`` back to ``(b, h, w, c)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, c)


def overlapping_windows(x: torch.Tensor, window_size: int, overlap_size: int) -> torch.Tensor:
    """Cut ``(b, h, w, c)`` into enlarged windows ``(b * num_windows, overlap_size**2, c)``.

    Window ``i`` covers the query window ``i`` plus ``(overlap_size - window_size) // 2``
    pixels on each side; pixels outside the image are zeros (the original's ``nn.Unfold``
    padding). Windows are ordered like :func:`window_partition`.
    """
    pad = (overlap_size - window_size) // 2
    return unfold_windows(F.pad(x, (0, 0, pad, pad, pad, pad)) if pad else x, window_size, overlap_size)


def unfold_windows(padded: torch.Tensor, window_size: int, overlap_size: int) -> torch.Tensor:
    """:func:`overlapping_windows` of an image already padded by the enlargement on every side."""
    c = padded.shape[-1]
    # (b, nh, nw, c, oh, ow): a strided view, copied once by the reshape below.
    patches = padded.unfold(1, overlap_size, window_size).unfold(2, overlap_size, window_size)
    return patches.permute(0, 1, 2, 4, 5, 3).reshape(-1, overlap_size * overlap_size, c)


def relative_position_index_sa(window_size: int) -> torch.Tensor:
    """Index into the ``(2ws-1)**2`` bias table for every (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)  # 2, ws*ws
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # ws*ws, ws*ws, 2
    rel = rel + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def relative_position_index_oca(window_size: int, overlap_size: int) -> torch.Tensor:
    """Index into the ``(ws + ows - 1)**2`` bias table for (query, enlarged-key) pairs.

    Reproduces the original formula exactly, including its offset: some indices are
    negative and wrap around the table under PyTorch indexing, as in the original.
    """
    ori = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    ext = torch.stack(torch.meshgrid(torch.arange(overlap_size), torch.arange(overlap_size), indexing='ij'))
    rel = (ext.flatten(1)[:, None, :] - ori.flatten(1)[:, :, None]).permute(1, 2, 0)  # ws*ws, ows*ows, 2
    rel = rel + (window_size - overlap_size + 1)
    return rel[..., 0] * (window_size + overlap_size - 1) + rel[..., 1]


def shifted_window_mask(
    h: int, w: int, window_size: int, shift_size: int, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Mask ``(num_windows, ws*ws, ws*ws)`` for shifted windows: 0 within a region, -100 across.

    After the cyclic shift, the last window row/column mixes pixels from up to three
    regions of the image; pairs from different regions must not attend to each other.
    Built with tensor ops on ``device`` (no host loop).
    """

    def region(n: int) -> torch.Tensor:
        pos = torch.arange(n, device=device)
        return (pos >= n - window_size).long() + (pos >= n - shift_size).long()

    ids = (region(h)[:, None] * 3 + region(w)[None, :]).view(1, h, w, 1)
    ids = window_partition(ids, window_size).view(-1, window_size * window_size)
    different = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill_(different, SHIFT_MASK_VALUE)


def shifted_window_masks(
    window_size: int, shift_size: int, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Masks ``(3, ws*ws, ws*ws)`` of the last window column, the last window row and the corner window.

    After the cyclic shift only these windows mix regions, and every window of one kind
    has the same mask whatever the image size; interior windows need none. Equal to the
    matching windows of :func:`shifted_window_mask`.
    """
    pos = torch.arange(window_size, device=device)
    band = (pos >= window_size - shift_size).long() + 1  # region 1 or 2 inside the last window row/column
    same = torch.zeros_like(band)
    ids = torch.stack([
        same[:, None] * 3 + band[None, :],  # last column: one region along rows
        band[:, None] * 3 + same[None, :],  # last row: one region along columns
        band[:, None] * 3 + band[None, :],  # corner
    ]).flatten(1)
    different = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill_(different, SHIFT_MASK_VALUE)


def kernel_head_dim(head_dim: int, fused: bool) -> int:
    """Head size handed to the attention kernel: a multiple of 8 on the fused path (zero padded)."""
    return -(-head_dim // 8) * 8 if fused else head_dim


def padded_projection(
    linear: nn.Linear, parts: int, heads: int, kernel_d: int
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Weight and bias of ``linear`` (output ``parts x heads x head_dim``) with each head zero-padded
    to ``kernel_d`` outputs: the projection then writes the kernel's head layout directly, and its
    width becomes a multiple of 8 (HAT's 540-wide qkv GEMM runs ~1.7x faster at 576 on CPU)."""
    weight, bias = linear.weight, linear.bias
    d = weight.shape[0] // (parts * heads)
    if kernel_d == d:
        return weight, bias
    weight = F.pad(weight.view(parts, heads, d, -1), (0, 0, 0, kernel_d - d)).view(parts * heads * kernel_d, -1)
    if bias is not None:
        bias = F.pad(bias.view(parts, heads, d), (0, kernel_d - d)).view(-1)
    return weight, bias


def window_bands(count: int, masked_last: bool) -> list[tuple[int, int, bool]]:
    """Runs ``(start, stop, is_last)`` of window rows (or columns) that share a mask kind;
    with ``masked_last``, the last one is a run of its own (the shifted-window mask applies)."""
    if not masked_last:
        return [(0, count, False)]
    return ([(0, count - 1, False)] if count > 1 else []) + [(count - 1, count, True)]


def _attend_cpu_bf16(q, k, v, bias, scale) -> torch.Tensor:
    """Explicit attention window by window for bfloat16 on CPU, where bf16 GEMMs run ~2x faster
    than PyTorch's flash kernel at HAT's shapes (it gains nothing over float32 there): one
    ``baddbmm`` adds the bias and scales the logits (one window's scores stay in cache), the
    softmax runs in place (accumulating in float32). Inference only; ``bias`` is ``(1, heads, N, M)``."""
    bias = bias[0].to(q.dtype)
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
    for i in range(q.shape[0]):
        scores = torch.baddbmm(bias, q[i], k[i].transpose(-2, -1), alpha=scale)
        torch.softmax(scores, dim=-1, out=scores)
        torch.bmm(scores, v[i], out=out[i])
    return out


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    scale: float,
    dropout_p: float = 0.0,
    fused: bool = True,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` over 4-D ``(batch, heads, tokens, head_dim)`` tensors.

    4-D layouts keep ``scaled_dot_product_attention`` on its fast kernels (CPU and CUDA);
    ``bias`` broadcasts over the batch dimension. bfloat16 inference on CPU takes
    :func:`_attend_cpu_bf16` instead.
    """
    if fused and q.dtype == torch.bfloat16 and q.device.type == 'cpu' and not q.requires_grad and not dropout_p \
            and not torch.compiler.is_compiling():
        return _attend_cpu_bf16(q, k, v, bias, scale)
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    attn = (q * scale) @ k.transpose(-2, -1) + bias
    attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def gather_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Relative position bias ``(heads, queries, keys)``, contiguous, from a ``(entries, heads)`` table.

    Negative indices wrap around the table, as with the original's advanced indexing.
    """
    nq, nk = index.shape
    return table.t().index_select(1, index.reshape(-1) % table.shape[0]).view(-1, nq, nk)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, with relative position bias.

    Serves both the regular and the shifted windows of HAB: for shifted ones, pass the
    cyclically shifted image and ``masks`` from :func:`shifted_window_masks`.
    """

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused_attn = fused_attention_default()
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, rpi: torch.Tensor, masks: Optional[torch.Tensor] = None,
                bottom: bool = True) -> torch.Tensor:
        """``x``: image ``(b, h, w, dim)``, sides multiples of the window; ``masks``: ``(3, N, N)`` or None.

        Returns ``(b, h, w, dim)``: every pixel attended within its window, then projected.
        ``x`` may be a band of rows of a larger image; ``bottom`` says whether its last window row
        is the image's last (the one the shifted-window mask applies to).
        """
        b, h, w, c = x.shape
        ws, heads, n = self.window_size, self.num_heads, self.window_size ** 2
        d = c // heads
        kernel_d = kernel_head_dim(d, self.fused_attn)
        nh, nw = h // ws, w // ws
        shifted = masks is not None
        # Blocks of windows sharing one mask kind; their windows are cut out block after block.
        row_bands = window_bands(nh, shifted and bottom)
        blocks = [(r0, r1, c0, c1, 2 * last_row + last_col)
                  for r0, r1, last_row in row_bands for c0, c1, last_col in window_bands(nw, shifted)]
        grid = x.view(b, nh, ws, nw, ws, c)
        windows = [grid[:, r0:r1, :, c0:c1].permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c) for r0, r1, c0, c1, _ in blocks]
        windows = torch.cat(windows) if len(windows) > 1 else windows[0]
        counts = [b * (r1 - r0) * (c1 - c0) for r0, r1, c0, c1, _ in blocks]
        qkv = F.linear(windows, *padded_projection(self.qkv, 3, heads, kernel_d))
        bias = gather_bias(self.relative_position_bias_table, rpi)
        dropout_p = self.attn_drop if self.training else 0.0
        outs = []
        for (_, _, _, _, kind), block in zip(blocks, qkv.split(counts)):
            q, k, v = block.view(-1, n, 3, heads, kernel_d).permute(2, 0, 3, 1, 4).unbind(0)
            block_bias = bias if kind == 0 else bias + masks[kind - 1]
            out = attend(q, k, v, block_bias.unsqueeze(0), self.scale, dropout_p, self.fused_attn)
            outs.append(out[..., :d].transpose(1, 2))
        out = self.proj_drop(self.proj((torch.cat(outs) if len(outs) > 1 else outs[0]).reshape(-1, n, c)))
        # Back to the image: windows of a band of rows side by side, then the bands on top of each other.
        parts = iter(out.split(counts))
        rows = []
        for r0, r1, _ in row_bands:
            cols = [next(parts).view(b, r1 - r0, c1 - c0, ws, ws, c) for c0, c1, _ in window_bands(nw, shifted)]
            rows.append(torch.cat(cols, dim=2) if len(cols) > 1 else cols[0])
        out = torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]
        return out.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class OverlapCrossAttention(nn.Module):
    """Overlapping cross-attention: queries from ``ws x ws`` windows, keys/values from
    enlarged ``ows x ows`` windows centred on them (``ows = ws + int(ws * overlap_ratio)``).

    Only the attention part of OCAB; the block (norms, residuals, MLP) lives in
    ``hat_blocks.OCAB``. The bias table is owned by the block for checkpoint compatibility
    and passed in.
    """

    def __init__(self, dim: int, window_size: int, overlap_size: int, num_heads: int,
                 qk_scale: Optional[float] = None):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.overlap_size = overlap_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.fused_attn = fused_attention_default()

    def forward(self, qkv: torch.Tensor, table: torch.Tensor, rpi: torch.Tensor) -> torch.Tensor:
        """``qkv``: ``(b, h, w, 3 * heads * kd)`` projected features, heads possibly zero-padded to
        ``kd`` (see :func:`padded_projection`); returns ``(b, h, w, dim)``."""
        width = qkv.shape[-1] // 3
        pad = (self.overlap_size - self.window_size) // 2
        return self.attend_padded(qkv[..., :width], F.pad(qkv[..., width:], (0, 0, pad, pad, pad, pad)), table, rpi)

    def attend_padded(self, q: torch.Tensor, kv: torch.Tensor, table: torch.Tensor, rpi: torch.Tensor) -> torch.Tensor:
        """Queries ``(b, h, w, heads * kd)`` against keys/values ``(b, h + 2p, w + 2p, 2 * heads * kd)``
        padded by the enlargement ``p`` on every side (zeros beyond the image; a band of a larger
        image brings its neighbours' rows instead). Returns ``(b, h, w, dim)``."""
        b, h, w, width = q.shape
        ws, ows, heads, c = self.window_size, self.overlap_size, self.num_heads, self.dim
        kernel_d = width // heads
        q = window_partition(q, ws).view(-1, ws * ws, heads, kernel_d).transpose(1, 2)
        kv = unfold_windows(kv, ws, ows)
        k, v = kv.view(-1, ows * ows, 2, heads, kernel_d).permute(2, 0, 3, 1, 4).unbind(0)
        bias = gather_bias(table, rpi).unsqueeze(0)
        out = attend(q, k, v, bias, self.scale, 0.0, self.fused_attn)
        out = out[..., :c // heads].transpose(1, 2).reshape(-1, ws, ws, c)
        return window_reverse(out, ws, h, w)
