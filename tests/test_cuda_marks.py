"""Every CUDA-only test carries ``@pytest.mark.cuda`` and benchmarks/gpu_check.sh runs it: the suite is collected
twice, as if CUDA were missing and present (tests/cuda_probe.py), and the tests whose skip marks depend on it are
compared with the marked ones and with what the GPU script's test step selects."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, TESTS_DIR

SCRIPT = REPO_ROOT / 'benchmarks' / 'gpu_check.sh'


def collect(command: str, cuda: bool, out_dir) -> dict:
    """Run ``command`` (a pytest collection, from the repository root) with the probe answering ``cuda``."""
    out = out_dir / f'probe_{int(cuda)}.json'
    path = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT), os.environ.get('PYTHONPATH', '')])
    proc = subprocess.run(['bash', '-c', f'{command} --collect-only -p cuda_probe'],
                          cwd=out_dir, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': path, 'HAT_PROBE_CUDA': str(int(cuda)),
                               'HAT_PROBE_OUT': str(out)})
    assert proc.returncode in (0, 5) and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]  # 5: none selected
    return json.loads(out.read_text())


def gpu_script_test_command(tmp_path) -> str:
    """The command of gpu_check.sh's cuda-tests step, as --dry-run prints it, with this Python."""
    proc = subprocess.run(['bash', str(SCRIPT), '--dry-run'], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, 'PYTHON': sys.executable, 'OUT': str(tmp_path / 'out')})
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.split()[1:2] == ['cuda-tests']]
    return line.split(': ', 1)[1]


@pytest.fixture(scope='module')
def probes(tmp_path_factory) -> tuple[dict, dict]:
    """(collected without CUDA through the GPU script's own test command, collected with CUDA)."""
    tmp_path = tmp_path_factory.mktemp('cuda_probe')
    without = collect(gpu_script_test_command(tmp_path), cuda=False, out_dir=tmp_path)
    every_test = f'cd {shlex.quote(str(REPO_ROOT))} && {shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider'
    every_test += ' tests'
    with_cuda = collect(every_test, cuda=True, out_dir=tmp_path)
    return without, with_cuda


def cuda_only(without: dict, with_cuda: dict) -> set[str]:
    """Tests that skip (or do not exist) without CUDA and run with it."""
    return {test for test, seen in with_cuda['tests'].items()
            if seen['skip'] == 'runs' and without['tests'].get(test, {'skip': 'skipped'})['skip'] == 'skipped'}


def test_every_test_that_needs_cuda_carries_the_cuda_mark(probes):
    without, with_cuda = probes
    needs = cuda_only(without, with_cuda)
    assert len(needs) >= 4, sorted(needs)  # the probe does see the suite's CUDA-only tests
    assert sorted(test for test in needs if not with_cuda['tests'][test]['cuda']) == []
    unknown = [test for probe in probes for test, seen in probe['tests'].items() if seen['skip'] == 'unknown']
    assert unknown == [], 'skipif with a string condition: use a bool so that this check can read it'


def test_every_cuda_marked_test_skips_cleanly_without_cuda_and_runs_with_it(probes):
    without, with_cuda = probes
    marked = {test for test, seen in with_cuda['tests'].items() if seen['cuda']}
    assert marked == cuda_only(without, with_cuda)


def test_the_gpu_script_runs_every_cuda_test(probes):
    without, with_cuda = probes
    assert set(without['selected']) == {test for test, seen in without['tests'].items() if seen['cuda']}
    assert cuda_only(without, with_cuda) <= set(without['selected']) | (set(with_cuda['tests']) - set(without['tests']))
