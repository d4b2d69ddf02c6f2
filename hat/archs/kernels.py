"""Kernel-specific layouts and precision rules behind HAT's attention and residual stream.

None of this changes the function the network computes; it decides how fast and how safely it
runs: attention heads zero-padded for the kernels, bfloat16 attention on CPU through batched
GEMMs, and the residual stream kept in at least float32 under half precision.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def kernel_head_dim(head_dim: int, fused: bool) -> int:
    """Head size handed to the attention kernel: a multiple of 8 on the fused path (zero padded)."""
    return -(-head_dim // 8) * 8 if fused else head_dim


def padded_projection(
    linear: nn.Linear, parts: int, heads: int, kernel_d: int
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Weight and bias of ``linear`` (output ``parts x heads x head_dim``) with each head zero-padded to
    ``kernel_d`` outputs, so the projection writes the kernel's head layout (CUDA's memory-efficient kernel
    needs a multiple of 8; HAT's heads have 30) and GEMMs get a faster multiple-of-8 width."""
    weight, bias = linear.weight, linear.bias
    d = weight.shape[0] // (parts * heads)
    if kernel_d == d:
        return weight, bias
    # (parts, heads, d, in) -> (parts, heads, kernel_d, in) -> (parts * heads * kernel_d, in)
    weight = F.pad(weight.view(parts, heads, d, -1), (0, 0, 0, kernel_d - d)).view(parts * heads * kernel_d, -1)
    if bias is not None:
        bias = F.pad(bias.view(parts, heads, d), (0, kernel_d - d)).view(-1)  # (parts * heads * kernel_d,)
    return weight, bias


def attend_bf16_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """Attention window by window with bfloat16 GEMMs: one ``baddbmm`` adds the bias and scales the
    logits (one window's scores stay in cache), the softmax runs in place. ``bias``: ``(1, heads, N, M)``."""
    bias = bias[0].to(q.dtype)  # (heads, N, M)
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)  # (windows, heads, N, d)
    for i in range(q.shape[0]):
        scores = torch.baddbmm(bias, q[i], k[i].transpose(-2, -1), alpha=scale)  # (heads, N, M)
        torch.softmax(scores, dim=-1, out=scores)
        torch.bmm(scores, v[i], out=out[i])
    return out


def scaled_dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float,
                       dropout_p: float) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` on 4-D ``(windows, heads, tokens, d)`` tensors (its fast kernels need
    4-D), or :func:`attend_bf16_cpu` for bfloat16 on CPU without autograd, dropout or compilation (the CPU
    flash kernel gains nothing over float32 there)."""
    if (q.dtype == torch.bfloat16 and q.device.type == 'cpu' and not q.requires_grad and not dropout_p
            and not torch.compiler.is_compiling()):
        return attend_bf16_cpu(q, k, v, bias, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)


# Half precision: the residual stream adds up the output of every block and can outgrow
# float16 (max 65504) in trained networks, so it is kept in float32 together with the ops
# that read it unnormalised (LayerNorm, the 3x3 conv closing each RHAG); the branches
# (attention, MLP, CAB) run in half precision on normalised inputs. For float32/float64
# every cast below is a no-op.
def stream_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the residual stream for branches computing in ``dtype``: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """``t`` in ``dtype`` (None stays None: an absent bias)."""
    return None if t is None else t.to(dtype)


def autocast_off(x: torch.Tensor):
    """Context that turns autocast off for ``x``'s device (nothing to turn off on e.g. meta)."""
    if torch.amp.is_autocast_available(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def stream_layer_norm(norm: nn.LayerNorm, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``norm(x)`` computed in ``x``'s precision (autocast off), handed on as ``out_dtype``."""
    with autocast_off(x):
        y = F.layer_norm(x, norm.normalized_shape, cast(norm.weight, x.dtype), cast(norm.bias, x.dtype), norm.eps)
    return y.to(out_dtype)


def stream_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` computed in ``x``'s precision (autocast off)."""
    with autocast_off(x):
        return F.conv2d(x, conv.weight.to(x.dtype), cast(conv.bias, x.dtype), conv.stride, conv.padding,
                        conv.dilation, conv.groups)
