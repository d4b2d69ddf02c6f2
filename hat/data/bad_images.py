"""Images that cannot be read or decoded: named, then skipped or stopped at, as a dataset's ``bad_image`` says.

basicsr's datasets fail on a corrupt image deep inside a data-loader worker, naming no file.
:func:`build_dataset` wraps each dataset in :class:`BadImageGuard`, which names the bad file and
skips it (training default) or stops; skips in workers are logged and counted in the main process
by :class:`SkipLog`. The policy and messages are described in docs/training.md ("Bad images in the data").
"""
from __future__ import annotations

import contextlib
import copy
import logging
import multiprocessing
import os
import random
import sys
import threading
import weakref
from collections import Counter
from typing import Any, Iterator, Optional

import cv2
import numpy as np
from torch.utils import data

from hat.problems import Problem, ProblemsError

#: Values of a dataset's ``bad_image`` option.
POLICIES = ('skip', 'stop')

#: ``bad_image`` when a training set does not say.
DEFAULT_TRAIN_POLICY = 'skip'

#: Bad samples in a row after which skipping gives up: the data set itself is broken.
MAX_BAD_IN_A_ROW = 50

#: Files a summary names.
SHOWN = 10

#: How often the skip log's thread looks for reports (it is woken at once to stop).
POLL_SECONDS = 0.05


class BadImageError(RuntimeError):
    """A dataset image that cannot be read or decoded, named in the message; when torch re-raises it from a
    data-loader worker with the worker's traceback in the message, that message is cut back to our one line."""

    def __init__(self, message: str):
        marker = f'{type(self).__name__}: '
        if 'Original Traceback' in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def decode_problem(content: Optional[bytes]) -> Optional[str]:
    """Why ``content`` is not an image OpenCV decodes the way basicsr reads training data, or None."""
    if content is None:
        return 'is missing from the LMDB'
    if len(content) == 0:
        return 'is an empty file'
    try:
        image = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    return None if image is not None else 'is not a decodable image (corrupt, truncated or not an image)'


def policy_of(dataset_opt: dict) -> str:
    """The dataset's ``bad_image`` policy: ``skip`` or ``stop``; validation and test sets always stop."""
    name = f'{dataset_opt.get("phase", "?")} ({dataset_opt.get("name", "unnamed")})'
    training = dataset_opt.get('phase') == 'train'
    policy = dataset_opt.get('bad_image', DEFAULT_TRAIN_POLICY if training else 'stop')
    if policy not in POLICIES:
        raise ProblemsError([Problem('datasets', f'{name}: bad_image {policy!r} is not one of {", ".join(POLICIES)}')])
    if policy == 'skip' and not training:
        raise ProblemsError([Problem('datasets', f'{name}: bad_image: skip is for training sets; validation and test '
                                                 'images are all decoded before the run starts and a bad one stops it '
                                                 '(remove the option)')])
    return policy


def sample_files(dataset: Any, index: int) -> list[tuple[str, str]]:
    """(client key, path or LMDB key) of every image sample ``index`` reads, from basicsr's ``paths`` layout."""
    paths = getattr(dataset, 'paths', None)
    if paths is None:
        return []
    entry = paths[index]
    if isinstance(entry, dict):  # paired datasets: {'lq_path': ..., 'gt_path': ...}
        return [(key[:-len('_path')], value) for key, value in entry.items() if key.endswith('_path')]
    keys = (getattr(dataset, 'io_backend_opt', None) or {}).get('client_keys') or ['gt']  # disk ignores the key
    return [(keys[0], entry)]


def describe(dataset: Any, key: str, path: str) -> str:
    """A file as users find it: its path, or its key and the LMDB holding it."""
    backend = getattr(dataset, 'io_backend_opt', None) or {}
    db_paths = backend.get('db_paths')
    if db_paths:
        db_paths = [db_paths] if isinstance(db_paths, str) else list(db_paths)
        db = dict(zip(backend.get('client_keys') or [], db_paths)).get(key, db_paths[0])
        return f'{path!r} in LMDB {str(db)!r}'
    return repr(path)


def file_problems(dataset: Any, files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(file, problem) for each of ``files`` ((client key, path) of ``dataset``) that cannot be read or decoded."""
    from basicsr.utils import FileClient

    if not files:
        return []
    client = getattr(dataset, 'file_client', None)
    if client is None:
        backend = dict(dataset.io_backend_opt)
        client = FileClient(backend.pop('type'), **backend)
    found = []
    for key, path in files:
        try:
            problem = decode_problem(client.get(path, key))
        except OSError as error:
            problem = f'cannot be read ({error.strerror or error})'
        if problem:
            found.append((describe(dataset, key, path), problem))
    return found


def dataset_files(dataset: Any) -> list[tuple[str, str]]:
    """Every distinct (client key, path) that ``dataset`` reads, in order."""
    return list(dict.fromkeys(file for index in range(len(dataset)) for file in sample_files(dataset, index)))


class BadImageGuard(data.Dataset):
    """A basicsr dataset whose failed samples are explained by the bad file they read, then skipped or stopped at;
    other attributes (``opt``, ``paths``, ...) are the wrapped dataset's, so basicsr's loops see what they built."""

    def __init__(self, dataset: Any, dataset_opt: dict, reports: Optional[Any] = None):
        self.dataset = dataset
        self.policy = policy_of(dataset_opt)
        self.label = f'datasets: {dataset_opt.get("phase", "?")} ({dataset_opt.get("name", "unnamed")})'
        self.reports = reports

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__') or name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        for _ in range(MAX_BAD_IN_A_ROW):
            try:
                return self.dataset[index]
            except Exception as error:
                problems = file_problems(self.dataset, sample_files(self.dataset, index))
                if not problems:
                    raise
                if self.policy == 'stop':
                    named = '; '.join(f'{file} {problem}' for file, problem in problems)
                    raise BadImageError(f'{self.label}: {named}. Replace or remove it (`python -m '
                                        'hat.scripts.check_data` lists every bad image), or set bad_image: skip in '
                                        'this dataset section to train on without it') from error
                self._report(problems)
                index = random.randrange(len(self.dataset))
        raise BadImageError(f'{self.label}: {MAX_BAD_IN_A_ROW} samples in a row read bad images; the data set looks '
                            'broken: run `python -m hat.scripts.check_data` on it')

    def _report(self, problems: list[tuple[str, str]]) -> None:
        for file, problem in problems:
            if self.reports is not None:
                self.reports.put((self.label, file, problem))
            else:
                _emit(f'{self.label}: skipped {file}: it {problem} (bad_image: skip)')


def _emit(message: str) -> None:
    """A warning in the training log; on processes whose log is silenced (ranks > 0), on stderr."""
    logger = logging.getLogger('basicsr')
    if logger.handlers and logger.isEnabledFor(logging.WARNING):
        logger.warning(message)
    else:
        print(f'[hat] {message}', file=sys.stderr, flush=True)


class SkipLog:
    """The main process's end of the skip reports: logs each bad file when first skipped, and counts every skip.

    Its reader thread is stopped around every fork (DataLoader workers): a thread holding a lock at a fork leaves
    that lock held forever in the child."""

    def __init__(self):
        self.queue = multiprocessing.SimpleQueue()
        self.skips: Counter = Counter()
        self._owner = os.getpid()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        _OPEN_LOGS.add(self)
        self._start()

    def _start(self) -> None:
        if self._closed or os.getpid() != self._owner or self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._drain, name='hat-bad-image-log', daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        if os.getpid() != self._owner or self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None

    def _drain(self) -> None:
        while not self._stopping.is_set():
            if self.queue.empty():
                self._stopping.wait(POLL_SECONDS)
            else:
                self._record(self.queue.get())

    def _record(self, item: tuple[str, str, str]) -> None:
        label, file, problem = item
        self.skips[item] += 1
        if self.skips[item] == 1:
            _emit(f'{label}: skipped {file}: it {problem} (bad_image: skip); {len(self.skips)} bad image(s) '
                  f'skipped so far, {sum(self.skips.values())} time(s)')

    def close(self) -> None:
        """Log everything reported so far, stop the thread, close the queue and write a summary if anything was
        skipped."""
        if self._closed:
            return
        self._stop()
        self._closed = True
        _OPEN_LOGS.discard(self)
        while not self.queue.empty():
            self._record(self.queue.get())
        self.queue.close()
        if self.skips:
            files = [file for _, file, _ in self.skips]
            more = f' and {len(files) - SHOWN} more' if len(files) > SHOWN else ''
            _emit(f'bad_image: skip: {len(self.skips)} bad image(s) skipped {sum(self.skips.values())} time(s) in this '
                  f'run: {", ".join(files[:SHOWN])}{more}. `python -m hat.scripts.check_data` lists them all')


#: The skip logs not yet closed, whose threads pause around every fork of this process.
_OPEN_LOGS: weakref.WeakSet = weakref.WeakSet()


def _stop_threads_before_fork() -> None:
    for log in list(_OPEN_LOGS):
        log._stop()


def _start_threads_after_fork() -> None:
    for log in list(_OPEN_LOGS):
        log._start()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(before=_stop_threads_before_fork, after_in_parent=_start_threads_after_fork)


def our_type(dataset_opt: dict) -> dict:
    """``dataset_opt`` with ``type: RealESRGANDataset`` read as ``RealHATDataset`` (which takes the original's keys)."""
    if dataset_opt.get('type') == 'RealESRGANDataset':
        return {**dataset_opt, 'type': 'RealHATDataset'}
    return dataset_opt


def make_dataset(dataset_opt: dict) -> Any:
    """The dataset an option section describes, as our entry points build it (no guard, nothing logged)."""
    from basicsr.utils.registry import DATASET_REGISTRY

    dataset_opt = copy.deepcopy(our_type(dataset_opt))
    return DATASET_REGISTRY.get(dataset_opt['type'])(dataset_opt)


def build_dataset(dataset_opt: dict, reports: Optional[Any] = None) -> BadImageGuard:
    """``basicsr.data.build_dataset`` that builds ``type: RealESRGANDataset`` as ``RealHATDataset`` and guards the
    result against bad images (``reports``: a :class:`SkipLog` queue for skips in worker processes)."""
    from basicsr.data import build_dataset as basicsr_build_dataset

    policy_of(dataset_opt)  # a bad option fails before the dataset is listed
    dataset_opt = our_type(dataset_opt)
    return BadImageGuard(basicsr_build_dataset(dataset_opt), dataset_opt, reports)


@contextlib.contextmanager
def guarded_datasets(module: Any) -> Iterator[SkipLog]:
    """While the block runs, ``module.build_dataset`` (``basicsr.train``'s or ``basicsr.test``'s) is
    :func:`build_dataset`; afterwards it is restored and the skips are summarised in the log."""
    log = SkipLog()
    original = module.build_dataset
    module.build_dataset = lambda dataset_opt: build_dataset(dataset_opt, log.queue)
    try:
        yield log
    finally:
        module.build_dataset = original
        log.close()
