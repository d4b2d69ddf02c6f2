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

import os
import sys
from typing import Any, Callable, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if sys.path and os.path.abspath(sys.path[0]) == os.path.join(REPO_ROOT, 'hat'):
    sys.path[0] = REPO_ROOT  # run as a script: import the package, not its modules as top-level names

import hat  # noqa: E402,F401  (registers HAT; basicsr's pipelines are patched only for the run below)


def run_checked(module: Any, pipeline: Callable[[str], None], root_path: str, script: str) -> None:
    """Run BasicSR's train or test ``pipeline`` with our fixes, pre-flight checks and experiment lock (see
    :func:`hat.training.basicsr_compat.parse_options`); an exception on any rank ends every rank with its message."""
    from hat.training.basicsr_patches import Run, patched_run

    with patched_run(module, Run(script, checked=True)) as run:
        try:
            pipeline(root_path)
        except BaseException as error:
            if run.ranks is not None:
                run.ranks.fail(error, refused=isinstance(error, refusals()))
            raise


def refusals() -> tuple[type[BaseException], ...]:
    """Exceptions that refuse a start before anything is written (exit status 2)."""
    from hat.training.experiment_lock import ExperimentLockedError
    from hat.training.preflight import OptionError
    from hat.training.resume import ResumeError

    return OptionError, ExperimentLockedError, ResumeError


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a mistake in the options, paths or command line, shown as one line without --debug."""
    from hat.data.bad_images import BadImageError
    from hat.training.basicsr_compat import LaunchError
    from hat.weights.checkpoint import CheckpointError

    return refusals() + (CheckpointError, LaunchError, BadImageError, FileNotFoundError, NotADirectoryError,
                         IsADirectoryError, PermissionError, ValueError)


def run_command(script: str, module: Any, pipeline: Callable[[str], None], root_path: str) -> None:
    """``run_checked`` for a command line: user mistakes print as one line (all lines of a refusal) and exit 2 or 1."""
    from hat.training.preflight import debug_requested

    try:
        run_checked(module, pipeline, root_path, script)
    except user_errors() as error:
        if debug_requested():
            raise
        refused = isinstance(error, refusals())
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
