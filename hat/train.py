"""Train with BasicSR's command line: ``python hat/train.py -opt options/train/HAT_SRx4.yml``.

Same flags as BasicSR (``--launcher none|pytorch|slurm``, ``--auto_resume``, ``--debug``,
``--force_yml``, ``--local_rank``/``--local-rank``); distributed:
``torchrun --nproc_per_node=N hat/train.py -opt ... --launcher pytorch`` (NCCL on GPUs, gloo
on CPU). Experiments land in ``experiments/<name>`` under the repository root.

Before BasicSR writes anything, the whole option file is checked (``hat.training.preflight``) and the
experiment is locked (``hat.training.experiment_lock``); a refused start prints its problems, one line
each, and leaves the file system as it was. Mistakes print one line, tracebacks only with ``--debug``.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if sys.path and os.path.abspath(sys.path[0]) == os.path.join(REPO_ROOT, 'hat'):
    sys.path[0] = REPO_ROOT  # run as a script: import the package, not its modules as top-level names

import hat  # noqa: E402,F401  (registers HAT; basicsr's pipelines are patched only for the run below)


@contextlib.contextmanager
def replaced(module: Any, name: str, value: Any) -> Iterator[None]:
    """``module.name = value`` for the duration of a ``with`` block."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def _agree(opt: dict, error: Optional[Exception]) -> None:
    """Raise ``error``; in a distributed run, every rank raises if any rank refused (no rank waits for the others)."""
    import torch.distributed as dist

    if opt.get('dist') and dist.is_available() and dist.is_initialized():
        from hat.training.preflight import OptionError

        messages: list[Optional[str]] = [None] * dist.get_world_size()
        dist.all_gather_object(messages, None if error is None else str(error))
        refused = [(rank, m) for rank, m in enumerate(messages) if m]
        if refused and error is None:
            rank, message = refused[0]
            raise OptionError(opt.get('name', '?'), [f'rank {rank} refused to start: {message.splitlines()[0]}'])
    if error is not None:
        raise error


def run_checked(module: Any, pipeline: Callable[[str], None], root_path: str) -> None:
    """Run BasicSR's train or test ``pipeline`` with our fixes, pre-flight checks and experiment lock.

    Between BasicSR's option parsing and its first write (``load_resume_state``, ``make_exp_dirs``)
    the options are checked (:func:`hat.training.preflight.check`) and, on rank 0, the experiment is locked
    until the pipeline returns.
    """
    from hat.data.bad_images import guarded_datasets
    from hat.training import basicsr_compat
    from hat.training.experiment_lock import ExperimentLockedError, acquire, lock_path
    from hat.training.preflight import (
        OptionError,
        check,
        debug_requested,
        find_problems,
        parse_blockers,
        read_option_file,
    )

    with contextlib.ExitStack() as stack:
        stack.enter_context(basicsr_compat.patch_basicsr())
        parse = module.parse_options

        def parse_and_check(root, is_train=True):
            source = basicsr_compat.option_file(sys.argv)
            if source is None:
                return parse(root, is_train)  # no -opt: BasicSR's argparse prints the usage
            raw = read_option_file(source)
            if parse_blockers(raw, is_train, debug_requested()):
                raise OptionError(source, find_problems(raw, is_train) or ['BasicSR cannot parse these options'])
            try:
                opt, args = parse(root, is_train)
            except (KeyError, ValueError, SyntaxError, NameError) as error:
                if '--force_yml' not in sys.argv:
                    raise
                problem = (f'--force_yml: cannot apply it ({type(error).__name__}: {error}); write section:key=value '
                           'for keys the file has, e.g. train:total_iter=1000')
                raise OptionError(source, [problem]) from error
            error = None
            try:
                check(opt, is_train, source)
                if opt['rank'] == 0:
                    kind = 'experiments' if is_train else 'results'
                    stack.enter_context(acquire(lock_path(root, kind, opt['name']),
                                                f'{"experiment" if is_train else "test"} {opt["name"]!r}'))
            except (OptionError, ExperimentLockedError) as refused:
                error = refused
            _agree(opt, error)
            return opt, args

        stack.enter_context(replaced(module, 'parse_options', parse_and_check))
        stack.enter_context(guarded_datasets(module))  # bad images named, skipped or stopped at (bad_image option)
        pipeline(root_path)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a mistake in the options, paths or command line, shown as one line without --debug."""
    from hat.data.bad_images import BadImageError
    from hat.training.basicsr_compat import LaunchError
    from hat.training.experiment_lock import ExperimentLockedError
    from hat.training.preflight import OptionError
    from hat.weights.checkpoint import CheckpointError

    return (OptionError, ExperimentLockedError, CheckpointError, LaunchError, BadImageError, FileNotFoundError,
            NotADirectoryError, IsADirectoryError, PermissionError, ValueError)


def run_command(script: str, module: Any, pipeline: Callable[[str], None], root_path: str) -> None:
    """``run_checked`` for a command line: user mistakes print as one line (all lines of a refusal) and exit 2 or 1."""
    from hat.training.experiment_lock import ExperimentLockedError
    from hat.training.preflight import OptionError, debug_requested

    try:
        run_checked(module, pipeline, root_path)
    except user_errors() as error:
        if debug_requested():
            raise
        refused = isinstance(error, (OptionError, ExperimentLockedError))
        print(f'{script}: {"refused to start: " if refused else "error: "}{error}', file=sys.stderr)
        if not refused:
            print(f'{script}: add --debug to see where it happened', file=sys.stderr)
        sys.exit(2 if refused else 1)


def main(root_path: Optional[str] = None) -> None:
    """Train from the command line; ``experiments/`` goes under ``root_path`` (default: the repository)."""
    import basicsr.train

    run_command('hat/train.py', basicsr.train, basicsr.train.train_pipeline, root_path or REPO_ROOT)


if __name__ == '__main__':
    main()
