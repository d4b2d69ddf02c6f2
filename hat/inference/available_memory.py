"""How much host memory this process may still allocate: the least that machine, container and ulimits allow.

``MemAvailable`` alone is not enough: in a container the cgroup's limit (v1 ``memory.limit_in_bytes``
or v2 ``memory.max``, minus what the cgroup already uses) is usually far lower, and ``ulimit -v``
(``RLIMIT_AS``) or ``RLIMIT_DATA`` make allocations fail long before either. Going over the first
two gets the process killed without a word, so inference plans its tiles against the minimum
(:func:`host_available_memory`); going over a ulimit raises an allocation error, which tiling
treats like out-of-memory.
"""
from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Iterator, Optional

#: Limits at or above this many bytes mean "no limit" (cgroup v1 reports 2**63 rounded to pages).
UNLIMITED = 2 ** 60

#: What is assumed when the kernel tells nothing (not Linux, /proc not mounted).
FALLBACK_BYTES = 4 * 2 ** 30


def host_available_memory(proc: Path = Path('/proc'), cgroup_root: Path = Path('/sys/fs/cgroup')) -> int:
    """Bytes this process can still allocate on the host (see the module docstring); ``proc`` and
    ``cgroup_root`` are where ``/proc`` and the cgroup file systems are mounted."""
    candidates = [meminfo_available(proc), cgroup_available(proc, cgroup_root), rlimit_available(proc)]
    known = [value for value in candidates if value is not None]
    return max(min(known), 0) if known else FALLBACK_BYTES


def meminfo_available(proc: Path = Path('/proc')) -> Optional[int]:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (the kernel's estimate of what can be had without swapping)."""
    fields = _read_fields(proc / 'meminfo')
    if 'MemAvailable' in fields:
        return fields['MemAvailable']
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return None


def cgroup_available(proc: Path = Path('/proc'), cgroup_root: Path = Path('/sys/fs/cgroup')) -> Optional[int]:
    """Smallest ``limit - usage`` over this process's memory cgroup and its ancestors (v1 and v2); None if unlimited.
    Usage counts page cache the kernel could reclaim: this errs on the safe side."""
    rooms = []
    for folder, limit_name, usage_name in _cgroup_folders(proc, cgroup_root):
        limit = _read_int(folder / limit_name)
        if limit is not None and limit < UNLIMITED:
            rooms.append(limit - (_read_int(folder / usage_name) or 0))
    return min(rooms, default=None)


def rlimit_available(proc: Path = Path('/proc')) -> Optional[int]:
    """Room left under ``RLIMIT_AS`` (``ulimit -v``) and ``RLIMIT_DATA``; None if neither is set."""
    status = _read_fields(proc / 'self' / 'status')
    rooms = []
    for limit_kind, used_field in ((resource.RLIMIT_AS, 'VmSize'), (resource.RLIMIT_DATA, 'VmData')):
        soft, _ = resource.getrlimit(limit_kind)
        if soft != resource.RLIM_INFINITY and soft < UNLIMITED:
            rooms.append(soft - status.get(used_field, 0))
    return min(rooms, default=None)


def _cgroup_folders(proc: Path, cgroup_root: Path) -> Iterator[tuple[Path, str, str]]:
    """(folder, limit file, usage file) for this process's memory cgroup and each ancestor, v2 then v1."""
    try:
        lines = (proc / 'self' / 'cgroup').read_text().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(':', 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == '':
            mounts, files = (cgroup_root, cgroup_root / 'unified'), ('memory.max', 'memory.current')
        elif 'memory' in controllers.split(','):
            mounts, files = (cgroup_root / 'memory',), ('memory.limit_in_bytes', 'memory.usage_in_bytes')
        else:
            continue
        relative = Path(path.lstrip('/'))
        for mount in mounts:
            # Inside a container the process's path is often not visible: the mount root is its cgroup.
            for ancestor in (relative, *relative.parents):
                folder = mount / ancestor
                if (folder / files[0]).is_file():
                    yield folder, files[0], files[1]


def _read_int(path: Path) -> Optional[int]:
    """The integer in ``path`` (cgroup v2 writes ``max`` for no limit); None if absent or unreadable."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == 'max':
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _read_fields(path: Path) -> dict[str, int]:
    """``Name:   123 kB`` lines of a /proc file as bytes by name (lines in other shapes are left out)."""
    fields = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return fields
    for line in lines:
        name, _, value = line.partition(':')
        parts = value.split()
        if len(parts) == 2 and parts[1] == 'kB' and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024
    return fields
