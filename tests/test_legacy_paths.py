"""hat 0.1's flat module names still import (the same module objects) and still run with ``python -m``."""
import subprocess
import sys

import pytest

import hat
from hat.legacy_paths import MOVED


@pytest.mark.parametrize('old', sorted(MOVED))
def test_old_name_is_the_new_module(old):
    __import__(old)
    assert sys.modules[old] is sys.modules[MOVED[old]]
    assert sys.modules[MOVED[old]].__spec__.name == MOVED[old]


def test_old_class_identity_is_kept():
    from hat.checkpoint import CheckpointError

    assert CheckpointError is hat.CheckpointError


def test_old_command_runs(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'hat.convert', '--help'], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '--dtype' in done.stdout
