"""Compute precisions by name (``fp32``, ``bf16``, ``fp16``) and which one a device runs natively.

The one place that maps the names users write (in option files, ``--precision``, benchmark
specs) to torch dtypes::

    parse_precision('bf16')      # torch.bfloat16 (also 'bfloat16', torch.bfloat16)
    precision_name(torch.half)   # 'fp16'
    auto_precision(device)       # 'bf16' where the device computes bf16 natively, else 'fp32'
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

#: Canonical names and their dtypes, in the order they are offered to users.
PRECISIONS = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}

#: Other spellings accepted for the canonical names (lower case).
ALIASES = {
    'float32': 'fp32', 'float': 'fp32', 'single': 'fp32',
    'bfloat16': 'bf16',
    'float16': 'fp16', 'half': 'fp16',
}

#: /proc/cpuinfo flags of x86 CPUs whose bf16 matrix products run in hardware.
NATIVE_BF16_CPU_FLAGS = frozenset({'avx512_bf16', 'amx_bf16'})

PrecisionLike = Union[str, torch.dtype]


def precision_name(value: PrecisionLike) -> str:
    """The canonical name (``fp32``, ``bf16``, ``fp16``) of a name, alias or torch dtype; ValueError naming the
    accepted values for anything else."""
    if isinstance(value, torch.dtype):
        for name, dtype in PRECISIONS.items():
            if dtype == value:
                return name
        raise ValueError(f'unsupported dtype {value}; use one of {", ".join(PRECISIONS)}')
    name = str(value).strip().lower()
    name = ALIASES.get(name, name)
    if name not in PRECISIONS:
        raise ValueError(f'unknown precision {value!r}; use one of {", ".join(PRECISIONS)} '
                         f'(or {", ".join(ALIASES)})')
    return name


def parse_precision(value: PrecisionLike) -> torch.dtype:
    """The torch dtype of a precision name, alias or dtype (see :func:`precision_name`)."""
    return PRECISIONS[precision_name(value)]


def cpu_has_native_bf16(cpuinfo: Union[str, Path] = '/proc/cpuinfo') -> bool:
    """True if the CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16), read from ``cpuinfo``'s flags."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(':')
        if key.strip() in ('flags', 'Features') and NATIVE_BF16_CPU_FLAGS & set(value.split()):
            return True
    return False


def has_native_bf16(device: Union[str, torch.device]) -> bool:
    """True where bf16 runs in hardware: a CUDA GPU that supports it, or a CPU with native bf16."""
    device = torch.device(device)
    if device.type == 'cuda':
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == 'cpu':
        return cpu_has_native_bf16()
    return False


def auto_precision(device: Union[str, torch.device]) -> str:
    """``'bf16'`` where ``device`` computes bf16 natively (:func:`has_native_bf16`), else ``'fp32'``."""
    return 'bf16' if has_native_bf16(device) else 'fp32'
