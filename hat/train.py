"""Train with BasicSR's command line: ``python hat/train.py -opt options/train/HAT_SRx4.yml``.

Same flags as BasicSR (``--launcher none|pytorch|slurm``, ``--auto_resume``, ``--debug``,
``--force_yml``, ``--local_rank``/``--local-rank``); distributed:
``torchrun --nproc_per_node=N hat/train.py -opt ... --launcher pytorch`` (NCCL on GPUs, gloo
on CPU). Experiments land in ``experiments/<name>`` under the repository root.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if sys.path and os.path.abspath(sys.path[0]) == os.path.join(REPO_ROOT, 'hat'):
    sys.path[0] = REPO_ROOT  # run as a script: import the package, not its modules as top-level names

import hat  # noqa: E402,F401  (first: applies the basicsr fixes, registers HAT)


def run_checked(module, pipeline: Callable[[str], None], root_path: str) -> None:
    """Run a BasicSR pipeline of ``module`` with our option checks between parsing and creating folders."""
    from hat.data.bad_images import guarded_datasets
    from hat.data.checks import check_options

    parse = module.parse_options

    def parse_and_check(root, is_train=True):
        opt, args = parse(root, is_train)
        check_options(opt)
        return opt, args

    module.parse_options = parse_and_check
    try:
        with guarded_datasets(module):  # bad images named, skipped or stopped at (datasets' bad_image option)
            pipeline(root_path)
    finally:
        module.parse_options = parse


def main(root_path: Optional[str] = None) -> None:
    """Train from the command line; ``experiments/`` goes under ``root_path`` (default: the repository)."""
    import basicsr.train

    run_checked(basicsr.train, basicsr.train.train_pipeline, root_path or REPO_ROOT)


if __name__ == '__main__':
    main()
