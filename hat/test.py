"""Test with BasicSR's command line: ``python hat/test.py -opt options/test/HAT_SRx4.yml``.

Writes ``results/<name>`` (log with PSNR/SSIM per dataset, and images if ``save_img``)
under the repository root. Accepts the same flags as ``hat/train.py`` and, like it, checks
the option file and locks ``results/<name>`` before anything is written.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if sys.path and os.path.abspath(sys.path[0]) == os.path.join(REPO_ROOT, 'hat'):
    sys.path[0] = REPO_ROOT  # run as a script: import the package, not its modules as top-level names

import hat  # noqa: E402,F401  (registers HAT; basicsr's pipelines are patched only for the run below)


def main(root_path: Optional[str] = None) -> None:
    """Test from the command line; ``results/`` goes under ``root_path`` (default: the repository)."""
    import basicsr.test

    from hat.train import run_command

    run_command('hat/test.py', basicsr.test, basicsr.test.test_pipeline, root_path or REPO_ROOT)


if __name__ == '__main__':
    main()
