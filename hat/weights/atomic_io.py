"""All-or-nothing file writes: the one place that knows how hat writes files that must never be half there.

Every checkpoint, training state, output image and list file goes through ``atomic_write``:
the data lands in a hidden temp file in the target folder (``.<name>.<random>.tmp``, mode
from the umask like a plain ``open``), is fsynced, then renamed into place and the folder
fsynced. A crash leaves either the old file or the new one, plus at worst a temp file that
``remove_stale_temp_files`` recognises by its name and removes on the next run.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional, Union

PathLike = Union[str, os.PathLike]

#: Names of our temp files: ``.<final name>.<random>.tmp`` (see ``tempfile.mkstemp`` below).
TEMP_NAME = re.compile(r'\.(?P<final>.+)\.[A-Za-z0-9_]+\.tmp')


class OutputExistsError(FileExistsError):
    """The output file exists and overwriting was not allowed."""


def _umask_from_proc() -> Optional[int]:
    """The umask from the kernel's ``/proc/self/status`` (Linux 4.7+), or None where it is not there."""
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open('/proc/self/status', encoding='ascii', errors='replace') as status:
        for line in status:
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    return None


def _umask_by_setting_it() -> int:
    """The umask read the only portable way: set it, then put it back (a moment in which files
    other threads create get mode 0666/0777, so done once, at import)."""
    mask = os.umask(0o077)  # the strictest mask for that moment, not the loosest
    os.umask(mask)
    return mask


#: Where ``/proc/self/status`` does not tell the umask: the umask when this module was imported.
_UMASK_AT_IMPORT: Optional[int] = None if _umask_from_proc() is not None else _umask_by_setting_it()


def umask() -> int:
    """The process's umask, read without changing it (see ``_umask_by_setting_it`` for systems without /proc)."""
    mask = _umask_from_proc()
    return mask if mask is not None else _UMASK_AT_IMPORT


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any], overwrite: bool = True) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, then move it to ``path``.

    With ``overwrite=False`` an existing ``path`` is never replaced, also one that appears while
    writing (a hard link does the final move where the file system has them).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f'{path} already exists')
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as handle:  # owns the descriptor from here: closed on every path
            os.chmod(tmp_name, 0o666 & ~umask())  # mkstemp makes 0600 files; give what open() would
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp_name, path)
        else:
            _move_without_replacing(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` all or nothing."""
    atomic_write(path, lambda handle: handle.write(data), overwrite)


def atomic_write_text(path: PathLike, text: str, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` all or nothing."""
    atomic_write_bytes(path, text.encode('utf-8'), overwrite)


def atomic_torch_save(obj: Any, path: PathLike, overwrite: bool = True) -> None:
    """``torch.save(obj)`` to ``path`` all or nothing."""
    import torch

    atomic_write(path, lambda handle: torch.save(obj, handle), overwrite)


def remove_stale_temp_files(folder: PathLike, suffixes: Optional[Iterable[str]] = None) -> list[str]:
    """Delete our temp files in ``folder`` left by writes a crash cut short; returns their names.

    ``suffixes`` (e.g. ``('.pth', '.state')``) limits it to temp files of such final names.
    Call it only where no other process of ours is writing into ``folder`` at the same time.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    suffixes = ('',) if suffixes is None else tuple(suffixes)  # every name ends with ''
    removed = []
    for entry in folder.iterdir():
        match = TEMP_NAME.fullmatch(entry.name)
        if not match or not entry.is_file() or not match['final'].lower().endswith(suffixes):
            continue
        with contextlib.suppress(FileNotFoundError):  # gone already
            entry.unlink()
            removed.append(entry.name)
    return removed


def _move_without_replacing(tmp_name: str, path: Path) -> None:
    """Rename ``tmp_name`` to ``path`` unless ``path`` exists (atomically where hard links work)."""
    try:
        os.link(tmp_name, path)
    except FileExistsError as error:
        raise OutputExistsError(f'{path} already exists') from error
    except OSError:
        # File systems without hard links: the existence check above is the best we can do.
        if path.exists():
            raise OutputExistsError(f'{path} already exists') from None
        os.replace(tmp_name, path)
        return
    os.unlink(tmp_name)


def fsync_directory(folder: PathLike) -> None:
    """Persist a rename in ``folder`` (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` all or nothing (see ``atomic_write_bytes``), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, overwrite)
