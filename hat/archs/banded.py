"""Memory-bounded inference: HAT's forward computed in bands of rows, the same function as
``HAT.forward_padded`` with at most three full-size ``embed_dim``-wide maps alive whatever the image size.

Chosen explicitly: ``model.set_banded(band_tokens)``, ``hat.load_hat(..., band_tokens=...)`` or
``with banded_inference(model):`` (as the inference engine does); eval mode without autograd only.
docs/architecture.md explains the halos.
"""
from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from hat.archs.kernels import stream_conv, stream_layer_norm

if TYPE_CHECKING:
    from hat.archs.hat_arch import CAB, HAB, HAT, OCAB, RHAG, AttentionInputs, Mlp

#: Default pixels per band (``HAT.set_banded``).
BAND_TOKENS = 4096


class MemoryLayout(NamedTuple):
    """What ``hat.inference.plan`` needs to know about a network (:func:`memory_layout`)."""

    embed_dim: int
    num_heads: int  # the largest num_heads entry
    window_size: int
    overlap_size: int  # side of OCAB's enlarged key/value windows
    mlp_hidden: int
    head_features: int  # channels of the reconstruction head
    upscale: int
    in_chans: int
    fused: bool  # fused attention (False: the original's explicit formulation)
    band_tokens: Optional[int]  # pixels per band of memory-bounded inference (None: whole image)


def memory_layout(model: HAT) -> MemoryLayout:
    """The sizes that decide how much memory a forward of ``model`` needs."""
    first = model.layers[0].residual_group.blocks[0]
    return MemoryLayout(
        embed_dim=model.embed_dim,
        num_heads=max(layer.residual_group.blocks[0].attn.num_heads for layer in model.layers),
        window_size=model.window_size,
        overlap_size=model.overlap_size,
        mlp_hidden=first.mlp.fc1.out_features,
        head_features=model.conv_last.in_channels,
        upscale=model.upscale,
        in_chans=model.in_chans,
        fused=model.fused_attention,
        band_tokens=model.band_tokens,
    )


@contextlib.contextmanager
def banded_inference(model: HAT, band_tokens: Optional[int] = BAND_TOKENS) -> Iterator[HAT]:
    """``model.set_banded(band_tokens)`` for the ``with`` block, restored afterwards."""
    previous = model.band_tokens
    model.set_banded(band_tokens)
    try:
        yield model
    finally:
        model.set_banded(previous)


def banded_view(model: torch.nn.Module, band_tokens: int = BAND_TOKENS) -> torch.nn.Module:
    """A shallow copy of ``model`` sharing its modules and weights, set for banded inference, so the
    caller's model keeps its own mode; other modules are returned as they are."""
    if not hasattr(model, 'set_banded'):
        return model
    view = copy.copy(model)
    view.set_banded(band_tokens)
    return view


def body_band_rows(band_tokens: int, batch: int, width: int, window_size: int) -> int:
    """Pixel rows per band of the body: whole window rows, about ``band_tokens`` pixels a band."""
    return max(1, band_tokens // (batch * width * window_size)) * window_size


def head_band_rows(band_tokens: int, batch: int, width: int) -> int:
    """LR rows per band of the reconstruction head: twice the body's pixels (the body's maps are
    gone by then), any number of rows."""
    return max(1, 2 * band_tokens // (batch * width))


def bands(height: int, rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of at most ``rows`` rows covering ``height`` (the last may be shorter)."""
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


def forward_padded_in_bands(model: HAT, x: torch.Tensor, band_tokens: int) -> torch.Tensor:
    """``model.forward_padded(x)`` in bands of about ``band_tokens`` pixels."""
    if torch.is_grad_enabled() or model.training:
        raise RuntimeError('banded inference (HAT.set_banded) runs in eval mode without autograd: call model.eval() '
                           'and run under torch.no_grad(), or model.set_banded(None) to train or take gradients')
    b, _, h, w = x.shape
    mean = model.mean.to(x.dtype).view(1, -1, 1, 1)  # (1, in_chans, 1, 1)
    x = (x - mean) * model.img_range
    rows = body_band_rows(band_tokens, b, w, model.window_size)
    # The shallow features are recomputed for the long skip instead of being kept through the body
    # (a 3-channel conv: negligible work, same values); the body's output is ours, so add in place.
    body = model.conv_after_body(features_in_bands(model, model.conv_first(x), rows)).add_(model.conv_first(x))
    return reconstruct_in_bands(model, body, mean, head_band_rows(band_tokens, b, w))


def features_in_bands(model: HAT, x: torch.Tensor, rows: int) -> torch.Tensor:
    """``model.forward_features(x)`` with every block in bands of ``rows`` pixel rows."""
    ctx, x_size = model.attention_inputs(x), tuple(x.shape[-2:])
    x = model.embed(x)  # rebinding x frees the shallow features (the caller recomputes them)
    for layer in model.layers:
        x = group_in_bands(layer, x, x_size, ctx, rows)
    return model.unembed(x, x_size, ctx.dtype)


def group_in_bands(rhag: RHAG, x: torch.Tensor, x_size: tuple[int, int], ctx: AttentionInputs,
                   rows: int) -> torch.Tensor:
    """``rhag(x, x_size, ctx)``; each block's output is a new tensor, so the residual adds in place."""
    group, shortcut = rhag.residual_group, x
    for block in group.blocks:
        x = hab_in_bands(block, x, x_size, ctx, rows)
    if group.overlap_attn is not None:
        x = ocab_in_bands(group.overlap_attn, x, x_size, ctx, rows)
    b, _, c = x.shape
    y = x.transpose(1, 2).reshape(b, c, *x_size)  # (b, c, h, w)
    if isinstance(rhag.conv, nn.Conv2d):
        y = stream_conv(rhag.conv, y)
    return y.flatten(2).transpose(1, 2).add_(shortcut)  # (b, h*w, c)


def hab_in_bands(hab: HAB, x: torch.Tensor, x_size: tuple[int, int], ctx: AttentionInputs,
                 rows: int) -> torch.Tensor:
    """``hab(x, x_size, ctx)`` whose output (a new tensor) is the only full-size map made: the conv
    branch, the attention (shifted bands wrap around the image) and the MLP add into it band by band."""
    (h, w), (b, _, c), s = x_size, x.shape, hab.shift_size
    image = x.view(b, h, w, c)  # tokens (b, h*w, c) as an image

    def normed(r0: int, r1: int) -> torch.Tensor:
        return stream_layer_norm(hab.norm1, wrapped_rows(image, r0, r1), ctx.dtype)  # (b, r1 - r0, w, c)

    out = torch.empty_like(image)
    if hab.conv_block is not None:
        cab_in_bands(hab.conv_block, normed, out, hab.conv_scale, rows)
        out += image
    else:
        out.copy_(image)
    for r0, r1 in bands(h, rows):
        band = normed(r0 + s, r1 + s)
        if s:
            band = torch.roll(band, shifts=-s, dims=2)
        band = hab.attn(band, ctx, shifted=bool(s), bottom=r1 == h)
        if s:
            band = torch.roll(band, shifts=s, dims=2)
        add_wrapped_rows_(out, r0 + s, band)
    add_mlp_in_bands_(out, hab.norm2, hab.mlp, ctx.dtype, rows)
    return out.view(b, h * w, c)  # back to tokens


def cab_in_bands(cab: CAB, rows_of: Callable[[int, int], torch.Tensor], out: torch.Tensor, scale: float,
                 band_rows: int) -> None:
    """Write ``cab(x, scale)`` into ``out`` ``(b, h, w, c)``, where ``rows_of(r0, r1)`` gives rows ``[r0, r1)``
    of ``x`` as ``(b, r1 - r0, w, c)``. Each band is computed from two extra rows on each side (the two
    3x3 convs); only the channel gate needs the whole map, and it is applied to ``out`` in place."""
    compress, act, expand, *attention = cab.cab
    h = out.shape[1]
    if scale == 0:
        out.zero_()
        return
    bias = None if expand.bias is None else expand.bias * scale
    for r0, r1 in bands(h, band_rows):
        lo, hi = max(r0 - 2, 0), min(r1 + 2, h)
        y = act(compress(rows_of(lo, hi).permute(0, 3, 1, 2))) * scale  # (b, c / compress, hi - lo, w)
        # Rows computed from the zero padding at a band edge inside the image are wrong; the
        # image's own edges (lo == 0, hi == h) have the original's zero padding.
        y = y[:, :, int(lo > 0):y.shape[2] - int(hi < h)]
        y = F.conv2d(y, expand.weight, bias, expand.stride, expand.padding)
        top = r0 - lo - (lo > 0)
        out[:, r0:r1] = y[:, :, top:top + r1 - r0].permute(0, 2, 3, 1)  # (b, r1 - r0, w, c)
    if attention:
        image = out.permute(0, 3, 1, 2)  # (b, c, h, w) view
        image.mul_(attention[0].gate(image, scale))


def add_mlp_in_bands_(x: torch.Tensor, norm: nn.LayerNorm, mlp: Mlp, dtype: torch.dtype, band_rows: int) -> None:
    """``x += mlp(norm(x))`` on an image ``(b, h, w, c)``, band by band and in place: the hidden layer
    only ever exists for one band."""
    for r0, r1 in bands(x.shape[1], band_rows):
        band = x[:, r0:r1]
        band += mlp(stream_layer_norm(norm, band, dtype))


def ocab_in_bands(ocab: OCAB, x: torch.Tensor, x_size: tuple[int, int], ctx: AttentionInputs,
                  rows: int) -> torch.Tensor:
    """``ocab(x, x_size, ctx)`` with queries, keys and values made for one band of window rows at a time
    (keys/values with the enlargement's rows above and below)."""
    (h, w), (b, _, c) = x_size, x.shape
    image = x.view(b, h, w, c)  # tokens (b, h*w, c) as an image
    p = (ctx.overlap_size - ctx.window_size) // 2
    weight, bias = ocab.qkv_projection()
    width = weight.shape[0] // 3
    out = torch.empty_like(image)
    for r0, r1 in bands(h, rows):
        lo, hi = max(r0 - p, 0), min(r1 + p, h)
        qkv = F.linear(stream_layer_norm(ocab.norm1, image[:, lo:hi], ctx.dtype), weight, bias)  # (b, hi-lo, w, 3W)
        # Keys/values padded by the enlargement: zeros beyond the image, neighbouring rows inside it.
        kv = F.pad(qkv[..., width:], (0, 0, p, p, p - (r0 - lo), p - (hi - r1)))  # (b, r1-r0+2p, w+2p, 2W)
        q = qkv[:, r0 - lo:r1 - lo, :, :width].contiguous()  # (b, r1 - r0, w, W)
        del qkv
        attn_x = ocab.attention(q, kv, ocab.relative_position_bias_table, ctx)
        del q, kv
        torch.add(image[:, r0:r1], ocab.proj(attn_x), out=out[:, r0:r1])
    add_mlp_in_bands_(out, ocab.norm2, ocab.mlp, ctx.dtype, rows)
    return out.view(b, h * w, c)  # back to tokens


def reconstruct_in_bands(model: HAT, x: torch.Tensor, mean: torch.Tensor, band_rows: int) -> torch.Tensor:
    """The reconstruction head band by band into one preallocated output: its ``upscale**2``-times larger
    maps exist for one band at a time. Each band carries one extra row per 3x3 conv above and below,
    and every conv's rows that the band's zero padding made wrong are cut off before the next layer."""
    b, _, h, w = x.shape
    s = model.upscale
    layers = [*model.conv_before_upsample, *model.upsample, model.conv_last]
    halo = sum(isinstance(layer, nn.Conv2d) for layer in layers)
    out = None
    for r0, r1 in bands(h, band_rows):
        top, bottom, height = max(r0 - halo, 0), min(r1 + halo, h), h
        y = x[:, :, top:bottom]
        for layer in layers:
            y = layer(y)
            if isinstance(layer, nn.Conv2d):
                cut_top, cut_bottom = int(top > 0), int(bottom < height)
                y = y[:, :, cut_top:y.shape[2] - cut_bottom]
                top, bottom = top + cut_top, bottom - cut_bottom
            elif isinstance(layer, nn.PixelShuffle):
                f = layer.upscale_factor
                top, bottom, height = top * f, bottom * f, height * f
        y = y[:, :, r0 * s - top:r1 * s - top] / model.img_range + mean  # (b, in_chans, (r1 - r0) * s, w * s)
        if out is None:
            out = y.new_empty(b, y.shape[1], h * s, w * s)
        out[:, :, r0 * s:r1 * s] = y
    return out
