"""What a benchmark figure was measured on: CPU model and its bf16/fp16 features, GPU, software
versions and the git commit, so every printed or recorded table says where it comes from."""
from __future__ import annotations

import contextlib
import platform
import subprocess
from pathlib import Path

import torch

#: /proc/cpuinfo flags that decide how fast bf16/fp16 matrix products can run on a CPU.
CPU_FLAGS = ('avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_fp16', 'avx_vnni')

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_info() -> dict:
    """Model name, family/model numbers, logical CPUs and the bf16-relevant flags, from /proc/cpuinfo."""
    info = {'cpu': platform.processor() or platform.machine()}
    path = Path('/proc/cpuinfo')
    if not path.exists():
        return info
    first: dict = {}
    count = 0
    for line in path.read_text().splitlines():
        key, _, value = (part.strip() for part in line.partition(':'))
        if key == 'processor':
            count += 1
        if count == 1 and key and key not in first:
            first[key] = value
    flags = set(first.get('flags', '').split())
    info['cpu'] = first.get('model name', info['cpu'])
    info['cpu_family_model'] = f"family {first.get('cpu family', '?')} model {first.get('model', '?')}"
    info['logical_cpus'] = count
    info['cpu_flags'] = [flag for flag in CPU_FLAGS if flag in flags]
    return info


def torch_cpu_features() -> dict:
    """What torch itself detected: the vector ISA it dispatches to and oneDNN's bf16/fp16 support."""
    features = {'torch_cpu_capability': torch.backends.cpu.get_cpu_capability()}
    mkldnn = getattr(torch.ops, 'mkldnn', None)
    for name, query in (('onednn_bf16', '_is_mkldnn_bf16_supported'), ('onednn_fp16', '_is_mkldnn_fp16_supported')):
        with contextlib.suppress(AttributeError, RuntimeError):
            features[name] = bool(getattr(mkldnn, query)())
    return features


def git_commit() -> str:
    """Short commit of the checkout the benchmark runs from, ``+dirty`` with uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(['git', *args], capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout.strip()
    try:
        commit = git('rev-parse', '--short', 'HEAD')
        return commit + ('+dirty' if git('status', '--porcelain', '--untracked-files=no') else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def describe(device: torch.device, threads: int) -> dict:
    """Everything a figure depends on, as a flat dict (printed in the header, stored in JSON)."""
    info = {
        'python': platform.python_version(), 'torch': torch.__version__, 'commit': git_commit(),
        'platform': platform.platform(), 'device': str(device), 'threads': threads,
        **cpu_info(), **torch_cpu_features(),
    }
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_capability=f'{props.major}.{props.minor}',
                    gpu_memory_gib=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                    gpu_bf16=torch.cuda.is_bf16_supported())
    return info


def header(info: dict) -> str:
    """The environment as ``key: value`` lines, the CPU's bf16 capability spelled out."""
    flags = info.get('cpu_flags')
    lines = [
        f"torch {info['torch']}, Python {info['python']}, commit {info['commit']}, {info['platform']}",
        f"CPU: {info['cpu']} ({info.get('cpu_family_model', '?')}, {info.get('logical_cpus', '?')} logical CPUs), "
        f"device {info['device']}, {info['threads']} threads",
        f"CPU bf16: torch capability {info['torch_cpu_capability']}, flags "
        f"{' '.join(flags) if flags else 'none of ' + ' '.join(CPU_FLAGS)}, oneDNN bf16 "
        f"{info.get('onednn_bf16', '?')}, fp16 {info.get('onednn_fp16', '?')}; native bf16 matrix units (AMX): "
        f"{'yes' if 'amx_bf16' in (flags or []) else 'no'}",
    ]
    if 'gpu' in info:
        lines.append(f"GPU: {info['gpu']} (sm {info['gpu_capability']}, {info['gpu_memory_gib']} GiB, "
                     f"CUDA {info['cuda']}, bf16 {info['gpu_bf16']})")
    if 'command' in info:
        lines.append(f"command: {info['command']}")
    return '\n'.join(lines)
