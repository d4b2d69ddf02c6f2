"""Every substitution hat makes in BasicSR or in global library state, in one place, each undone on exit.

- ``sys.modules['torchvision.transforms.functional_tensor']``: a stand-in module, at ``import hat``
  (it adds a module and replaces nothing; see :mod:`hat.training.basicsr_compat`);
- ``parse_options`` of ``basicsr.utils.options``, ``basicsr.train`` and ``basicsr.test``:
  :func:`hat.training.basicsr_compat.parse_options`, during a run;
- ``basicsr.train.load_resume_state``: :func:`hat.training.resume.load_resume_state`, during a run;
- ``basicsr.train.get_root_logger``: BasicSR's, then the run's notes (skipped states) into the log;
- ``build_dataset`` of ``basicsr.train`` / ``basicsr.test``: :func:`hat.data.bad_images.guarded_datasets`,
  during ``hat/train.py`` / ``hat/test.py``;
- ``basicsr.archs.vgg_arch.vgg`` and ``VGG_PRETRAIN_PATH``: :func:`vgg_substitution`, from
  ``hat.losses.local_vgg`` while a VGG network is built.

A run is ``hat/train.py`` / ``hat/test.py`` (:func:`patched_run`), or a script's own call of BasicSR's
pipelines after :func:`hat.training.basicsr_compat.patch_basicsr`. The option file is parsed once per run;
what the substituted functions share travels in :class:`Run`, not in module globals.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional


class Substitution:
    """``owner.name = value`` for each ``(owner, name, value)``; ``restore()`` or leaving a ``with`` block undoes it."""

    def __init__(self, changes: Iterable[tuple[Any, str, Any]]) -> None:
        changes = list(changes)
        self._saved = [(owner, name, getattr(owner, name)) for owner, name, _ in changes]
        for owner, name, value in changes:
            setattr(owner, name, value)

    def restore(self) -> None:
        """Put back what the owners held before (safe to call more than once)."""
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)
        self._saved = []

    def __enter__(self) -> Substitution:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.restore()


@dataclass
class Run:
    """What one run hands between the substituted functions: who runs it, whether it is checked, and its state."""

    script: str = 'basicsr'
    checked: bool = False  # pre-flight and the experiment lock (hat/train.py, hat/test.py)
    notes: list[str] = field(default_factory=list)  # lines for the training log, written once BasicSR opens it
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # the lock, the rank watcher
    ranks: Optional[Any] = None  # hat.training.rank_failures.FellowRanks of a distributed run


def _logger_with_notes(original: Any, notes: list[str], *args: Any, **kwargs: Any) -> Any:
    logger = original(*args, **kwargs)
    while notes:
        logger.warning(notes.pop(0))
    return logger


def basicsr_substitutions(run: Run) -> Substitution:
    """The substituted BasicSR functions of ``run`` (see the table above), installed until restored."""
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options

    from hat.training.basicsr_compat import parse_options
    from hat.training.resume import load_resume_state

    parse = functools.partial(parse_options, run=run)
    return Substitution([(module, 'parse_options', parse) for module in (basicsr.utils.options, basicsr.train,
                                                                          basicsr.test)] + [
        (basicsr.train, 'load_resume_state', functools.partial(load_resume_state, notes=run.notes)),
        (basicsr.train, 'get_root_logger', functools.partial(_logger_with_notes, basicsr.train.get_root_logger,
                                                             run.notes))])


@contextlib.contextmanager
def patched_run(module: Any, run: Run) -> Iterator[Run]:
    """Everything ``run`` of ``module``'s pipeline (``basicsr.train`` or ``basicsr.test``) substitutes, and its lock
    and rank watcher; all undone on exit."""
    from hat.data.bad_images import guarded_datasets

    with run.stack, basicsr_substitutions(run), guarded_datasets(module):
        yield run


def vgg_substitution(constructors: Any) -> Substitution:
    """basicsr's ``VGGFeatureExtractor`` builds its network with ``constructors`` and loads no file of its own."""
    from basicsr.archs import vgg_arch

    return Substitution([(vgg_arch, 'vgg', constructors), (vgg_arch, 'VGG_PRETRAIN_PATH', '')])
