"""HAT: Hybrid Attention Transformer for image super-resolution (Chen et al., CVPR 2023).

``HAT`` takes the constructor arguments of the original release, so its ``network_g``
option sections build it unchanged, and has the same ``state_dict`` keys, so the published
checkpoints load strictly and give the same pixels. Unlike the original network, it takes
any input size: it reflect-pads right and bottom to a multiple of ``window_size`` (the
original's test-time recipe) and crops the output.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from hat.archs.hat_attention import (
    relative_position_index_oca,
    relative_position_index_sa,
    shifted_window_masks,
)
from hat.archs.hat_blocks import (
    RHAG,
    AttentionInputs,
    PatchEmbed,
    Upsample,
    bands,
    is_supported_scale,
    stream_layer_norm,
)

IntOrPair = Union[int, Sequence[int]]

#: Mean of the DIV2K training images, subtracted from RGB inputs (as in the original).
RGB_MEAN = (0.4488, 0.4371, 0.4040)

#: Intermediate channels of the reconstruction head (fixed in the original).
NUM_FEAT = 64

#: How many input sizes keep their shift mask cached (tiles of one image share one size).
MASK_CACHE_SIZE = 8

#: Default ``HAT.band_tokens``: pixels per band of memory-bounded inference (see ``HAT.band_rows``).
BAND_TOKENS = 4096


def _pair(value: IntOrPair) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


class MemoryLayout(NamedTuple):
    """What ``hat.memory_budget`` needs to know about a network (``HAT.memory_layout``)."""

    embed_dim: int
    num_heads: int  # the largest num_heads entry
    window_size: int
    overlap_size: int  # side of OCAB's enlarged key/value windows
    mlp_hidden: int
    head_features: int  # channels of the reconstruction head (NUM_FEAT)
    upscale: int
    in_chans: int
    fused: bool  # fused attention (False: the original's explicit formulation)
    band_tokens: Optional[int]  # pixels per band of memory-bounded inference (None: whole image)


def body_band_rows(band_tokens: int, batch: int, width: int, window_size: int) -> int:
    """Pixel rows per band of the body: whole window rows, about ``band_tokens`` pixels a band."""
    return max(1, band_tokens // (batch * width * window_size)) * window_size


def head_band_rows(band_tokens: int, batch: int, width: int) -> int:
    """LR rows per band of the reconstruction head: twice the body's pixels (the body's maps are
    gone by then), any number of rows."""
    return max(1, 2 * band_tokens // (batch * width))


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
        conv_scale: Weight of the conv branch relative to attention.
        overlap_ratio: OCAB enlarges key/value windows by ``int(window_size * overlap_ratio)``,
            which must be even (half on each side).
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
    ):
        super().__init__()
        depths, num_heads = list(depths), list(num_heads)
        patches = tuple(s // p for s, p in zip(_pair(img_size), _pair(patch_size)))
        _check_config(in_chans, embed_dim, depths, num_heads, window_size, compress_ratio, squeeze_factor,
                      overlap_ratio, mlp_ratio, upscale, upsampler, resi_connection, patches)

        self.window_size = window_size
        self.shift_size = window_size // 2
        self.overlap_ratio = overlap_ratio
        self.in_chans = in_chans
        self.upscale = upscale
        self.upsampler = upsampler
        self.img_range = img_range
        self.embed_dim = embed_dim
        self.num_layers = len(depths)
        self.ape = ape
        self.patches_resolution = patches
        #: Inference (no autograd, fused attention, not compiled) runs the body and the reconstruction
        #: head in bands of about this many pixels (whole window rows), so that temporaries stay
        #: bounded whatever the image size; None runs every layer on the whole image at once.
        self.band_tokens: Optional[int] = BAND_TOKENS
        mean = RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        # 1-D so the channels-last conversion below leaves it alone (DDP cannot sync a (1, c, 1, 1)
        # channels-last buffer: its strides make elements overlap).
        self.register_buffer('mean', torch.tensor(mean), persistent=False)
        self._mask_cache: OrderedDict = OrderedDict()

        overlap_size = window_size + int(overlap_ratio * window_size)
        self.register_buffer('relative_position_index_SA', relative_position_index_sa(window_size))
        self.register_buffer('relative_position_index_OCA', relative_position_index_oca(window_size, overlap_size))

        # 1. shallow feature extraction
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)

        # 2. deep feature extraction
        self.patch_embed = PatchEmbed(embed_dim, norm=patch_norm)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, patches[0] * patches[1], embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # Windows are not shifted when the training patch fits in a single window.
        shift_size = 0 if min(patches) <= window_size else self.shift_size
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(RHAG(
                dim=embed_dim,
                resi_connection=resi_connection,
                depth=depth,
                num_heads=heads,
                window_size=window_size,
                shift_size=shift_size,
                compress_ratio=compress_ratio,
                squeeze_factor=squeeze_factor,
                conv_scale=conv_scale,
                overlap_ratio=overlap_ratio,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[start:start + depth],
                use_checkpoint=use_checkpoint,
            ))
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
        # the channel attention blocks run 2x faster on CPU. state_dict shapes are unchanged.
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

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        for layer in self.layers:
            layer.residual_group.use_checkpoint = bool(enabled)

    def shift_mask(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Shifted-window masks ``(3, N, N)`` for an ``h x w`` feature map (see
        ``hat_attention.shifted_window_masks``), cached per size, device and dtype."""
        if torch.compiler.is_compiling():
            return shifted_window_masks(self.window_size, self.shift_size, device, dtype)
        key = (h, w, device, dtype)
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = shifted_window_masks(self.window_size, self.shift_size, device, dtype)
            self._mask_cache[key] = mask
            while len(self._mask_cache) > MASK_CACHE_SIZE:
                self._mask_cache.popitem(last=False)
        else:
            self._mask_cache.move_to_end(key)
        return mask

    def _apply(self, fn, *args, **kwargs):
        # Moving or casting the model invalidates cached masks.
        self._mask_cache.clear()
        return super()._apply(fn, *args, **kwargs)

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

    def band_rows(self, x: torch.Tensor) -> Optional[int]:
        """Pixel rows (whole window rows) per band of memory-bounded inference on ``x`` ``(b, c, h, w)``,
        or None where the whole image runs at once: with autograd on (training keeps the
        original formulation), in train mode, on the explicit attention path, under
        ``torch.compile``/``torch.export``, or with ``band_tokens=None``."""
        if (self.band_tokens is None or torch.is_grad_enabled() or self.training or torch.compiler.is_compiling()
                or not self.fused_attention):
            return None
        b, _, _, w = x.shape
        return body_band_rows(self.band_tokens, b, w, self.window_size)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The size an ``h x w`` input runs at: both sides padded up to a multiple of the window."""
        return h + window_padding(h, self.window_size), w + window_padding(w, self.window_size)

    @property
    def memory_layout(self) -> MemoryLayout:
        """The sizes that decide how much memory a forward needs (read by ``hat.memory_budget``)."""
        return MemoryLayout(
            embed_dim=self.embed_dim,
            num_heads=max(layer.residual_group.blocks[0].attn.num_heads for layer in self.layers),
            window_size=self.window_size,
            overlap_size=self.layers[0].residual_group.overlap_attn.overlap_win_size,
            mlp_hidden=self.layers[0].residual_group.blocks[0].mlp.fc1.out_features,
            head_features=NUM_FEAT,
            upscale=self.upscale,
            in_chans=self.in_chans,
            fused=self.fused_attention,
            band_tokens=self.band_tokens,
        )

    @property
    def fused_attention(self) -> bool:
        """Whether every attention module is on the fused path (see :meth:`set_fused_attention`)."""
        return all(m.fused_attn for m in self.modules() if hasattr(m, 'fused_attn'))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Transformer body on a ``(b, embed_dim, h, w)`` map whose sides are multiples of the window."""
        return self._body(x, self.band_rows(x))

    def _body(self, x: torch.Tensor, band_rows: Optional[int]) -> torch.Tensor:
        """``forward_features`` with the band height already decided (``band_rows`` walks every module)."""
        h, w = x.shape[-2:]
        inputs = AttentionInputs(
            rpi_sa=self.relative_position_index_SA,
            rpi_oca=self.relative_position_index_OCA,
            shift_masks=self.shift_mask(h, w, x.device, x.dtype),
            compute_dtype=x.dtype,
            band_rows=band_rows,
        )
        x = self.patch_embed(x)
        if self.ape:
            if x.shape[1] != self.absolute_pos_embed.shape[1]:
                raise ValueError(f'this model has an absolute position embedding (ape=True) for '
                                 f'{self.patches_resolution} inputs; got {(h, w)} after padding')
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x, (h, w), inputs)
        x = stream_layer_norm(self.norm, x, inputs.compute_dtype)
        return x.transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``(b, in_chans, h, w)`` in [0, 1] to ``(b, in_chans, h*upscale, w*upscale)``.

        An input of another floating dtype than the weights (say float64 or float16 into a
        float32 model) is computed in the weights' dtype and returned in its own.
        """
        self.check_input(x)
        (h, w), dtype = x.shape[-2:], x.dtype
        return self._crop_output(self.forward_padded(self._pad_input(x)), h, w, dtype)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an input whose sides are multiples of ``window_size``; output not cropped."""
        mean = self.mean.to(x.dtype).view(1, -1, 1, 1)
        x = (x - mean) * self.img_range
        band_rows = self.band_rows(x)
        if band_rows is None:
            x = self.conv_first(x)
            x = self.conv_after_body(self._body(x, None)) + x
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
            return x / self.img_range + mean
        # Memory-bounded inference: the shallow features are not kept through the body for the long
        # skip connection but recomputed after it (a 3-channel conv: negligible work, same values).
        # The body's output is a fresh tensor (also through an Identity), so the skip adds in place.
        body = self.conv_after_body(self._body(self.conv_first(x), band_rows)).add_(self.conv_first(x))
        return self._reconstruct_in_bands(body, mean, head_band_rows(self.band_tokens, body.shape[0], body.shape[-1]))

    def _reconstruct_in_bands(self, x: torch.Tensor, mean: torch.Tensor, band_rows: int) -> torch.Tensor:
        """The reconstruction head band by band into one preallocated output (inference): its
        ``upscale**2``-times larger maps exist for one band at a time. Each band is computed with
        one extra row per 3x3 conv above and below, and every conv's rows that the band's zero
        padding made wrong are cut off before the next layer (the image's own edges keep the
        original's padding)."""
        b, _, h, w = x.shape
        layers = [*self.conv_before_upsample, *self.upsample, self.conv_last]
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
            s = self.upscale
            y = y[:, :, r0 * s - top:r1 * s - top] / self.img_range + mean
            if out is None:
                out = y.new_empty(b, y.shape[1], h * s, w * s)
            out[:, :, r0 * s:r1 * s] = y
        return out

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
