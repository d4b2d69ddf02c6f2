"""hat.inference.available_memory: the least of MemAvailable, the cgroup (v1 and v2) limit and the ulimits.

Fake /proc and cgroup trees laid out as the kernel does, and a real subprocess under ``ulimit -v``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hat.inference.available_memory import UNLIMITED, cgroup_available, host_available_memory, meminfo_available

GIB = 2 ** 30


def fake_proc(root: Path, available_kib: int, cgroup_lines: str) -> Path:
    proc = root / 'proc'
    (proc / 'self').mkdir(parents=True)
    (proc / 'meminfo').write_text(f'MemTotal:       {4 * available_kib} kB\nMemFree:         1000 kB\n'
                                  f'MemAvailable:   {available_kib} kB\nBuffers:          12 kB\n')
    (proc / 'self' / 'cgroup').write_text(cgroup_lines)
    (proc / 'self' / 'status').write_text('Name:\tpython\nVmSize:\t 1024 kB\nVmData:\t 512 kB\n')
    return proc


def write_files(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace('_', '.', 1)).write_text(text + '\n')


def test_cgroup_v2_limit_minus_usage_and_a_tighter_parent(tmp_path):
    proc = fake_proc(tmp_path, 8 * GIB // 1024, '0::/user.slice/job.scope\n')
    cgroup = tmp_path / 'cgroup'
    write_files(cgroup / 'user.slice' / 'job.scope', memory_max=str(3 * GIB), memory_current=str(GIB))
    assert host_available_memory(proc, cgroup) == 2 * GIB
    write_files(cgroup / 'user.slice', memory_max=str(GIB + GIB // 2), memory_current=str(GIB // 2))
    assert host_available_memory(proc, cgroup) == GIB
    write_files(cgroup / 'user.slice', memory_max='max', memory_current=str(GIB // 2))
    assert cgroup_available(proc, cgroup) == 2 * GIB
    write_files(cgroup / 'user.slice' / 'job.scope', memory_max='max', memory_current=str(GIB))
    assert cgroup_available(proc, cgroup) is None
    assert host_available_memory(proc, cgroup) == meminfo_available(proc) == 8 * GIB


def test_cgroup_v1_limit_at_the_mount_root_of_a_container(tmp_path):
    # Inside a container the path named in /proc/self/cgroup is not visible; the mount root is the cgroup.
    proc = fake_proc(tmp_path, 8 * GIB // 1024, '5:devices:/\n4:memory:/docker/0123abc\n0::/\n')
    cgroup = tmp_path / 'cgroup'
    write_files(cgroup / 'memory', memory_limit_in_bytes=str(3 * GIB), memory_usage_in_bytes=str(GIB))
    assert host_available_memory(proc, cgroup) == 2 * GIB
    write_files(cgroup / 'memory', memory_limit_in_bytes=str(UNLIMITED + 1))  # v1's "no limit"
    assert host_available_memory(proc, cgroup) == 8 * GIB


def test_ulimit_v_is_the_limit_in_a_real_process(tmp_path):
    """Under ``ulimit -v`` (RLIMIT_AS) what the planner sees is what is left below it (here ~200 MiB)."""
    script = '''
import resource, torch
from hat.inference import plan
used = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + 200 * 2 ** 20, resource.RLIM_INFINITY))
print(plan.memory_budget(torch.device('cpu')) / plan.CPU_BUDGET_FRACTION / 2 ** 20)
'''
    result = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 150 < float(result.stdout) <= 200
