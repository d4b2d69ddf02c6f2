"""One run per experiment: a lock on ``experiments/<name>`` (training) or ``results/<name>`` (testing).

BasicSR archives an existing experiment folder when a run starts, even while another run writes into it, so
``hat/train.py`` and ``hat/test.py`` first take ``<root>/experiments/.locks/<name>.lock`` (beside the folder: a
refused start creates nothing). Exclusion is the kernel's ``flock``, freed however the owner exits, so a dead
owner's file is taken over; the file names its owner for the message a second run gets (docs/training.md).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Any, Optional

#: Descriptors of the locks this process holds; a forked child closes its copies (the lock stays with us).
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class ExperimentLockedError(RuntimeError):
    """Another running process holds the lock of this experiment."""


def lock_path(root_path: str, kind: str, name: str) -> str:
    """Where the lock of experiment ``name`` lives: ``<root>/<kind>/.locks/<name>.lock``."""
    return os.path.join(root_path, kind, '.locks', f'{name}.lock')


def describe(owner: dict[str, Any]) -> str:
    """'pid 123 on host h since 2026-11-30 12:00:00 (hat/train.py -opt x.yml)' from a lock file's content."""
    since = owner.get('since')
    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since)) if isinstance(since, (int, float)) else '?'
    text = f'pid {owner.get("pid", "?")} on host {owner.get("host", "?")} since {when}'
    return text + (f' ({owner["command"]})' if owner.get('command') else '')


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        owner = json.loads(os.pread(fd, os.fstat(fd).st_size, 0).decode('utf-8'))
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


class ExperimentLock(contextlib.AbstractContextManager):
    """An acquired lock; ``release()`` (or leaving a ``with`` block) removes the file and frees it."""

    def __init__(self, path: str, fd: Optional[int], created: tuple[str, ...] = ()) -> None:
        self.path, self._fd, self._created = path, fd, created
        if fd is not None:
            _HELD.add(fd)

    def release(self) -> None:
        """Remove the lock file and unlock (safe to call more than once)."""
        if self._fd is None:
            return
        try:
            if os.path.exists(self.path) and os.path.samestat(os.stat(self.path), os.fstat(self._fd)):
                os.unlink(self.path)
            for folder in (os.path.dirname(self.path), *self._created):
                with contextlib.suppress(OSError):  # only empty folders go: no other lock, no experiment in them
                    os.rmdir(folder)
        finally:
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def acquire(path: str, what: str) -> ExperimentLock:
    """Take the lock at ``path`` for ``what`` (e.g. "experiment 'x'"), or raise :class:`ExperimentLockedError`;
    a lock file whose owner is gone (no process holds its ``flock``) is taken over with a note."""
    created, folder = [], os.path.dirname(os.path.dirname(path))
    while folder and not os.path.isdir(folder):  # e.g. experiments/: removed again on release if still empty
        created.append(folder)
        folder = os.path.dirname(folder)
    while True:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except (FileNotFoundError, FileExistsError):
            continue  # a finishing run removed the then empty folders during our makedirs or before our open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                print(f'[hat] warning: cannot lock {path} ({error.strerror}); this file system does not guard '
                      f'{what} against a second run of the same name', file=sys.stderr)
                return ExperimentLock(path, None)
            for _ in range(20):  # the owner may be between taking the lock and writing its name
                owner = _read_owner(fd)
                if owner:
                    break
                time.sleep(0.05)
            os.close(fd)
            raise ExperimentLockedError(
                f'{what} is in use by another run: {describe(owner)}. Wait for it to finish, stop it, or give this '
                f'run another `name`; starting now would archive its folder while it writes (lock: {path})') from None
        try:
            if not os.path.exists(path) or not os.path.samestat(os.stat(path), os.fstat(fd)):
                os.close(fd)  # the previous owner removed the file between our open and lock: take the new one
                continue
            previous = _read_owner(fd)
            if previous:
                print(f'[hat] taking over the stale lock of {what}: its owner ({describe(previous)}) is no longer '
                      'running', file=sys.stderr)
            owner = dict(pid=os.getpid(), host=socket.gethostname(), since=time.time(), command=' '.join(sys.argv))
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(owner).encode('utf-8'))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return ExperimentLock(path, fd, tuple(created))
