"""benchmarks/gpu_check.sh, the one-shot GPU run, checked without a GPU: it parses, --dry-run lists
its steps (with arguments the benchmarks accept) and touches nothing, and a run with a stand-in
Python goes through every step and writes results.json and tables.md."""
import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / 'benchmarks' / 'gpu_check.sh'
STEPS = ['setup', 'cuda-tests', 'forward', 'memory', 'train', 'lam', 'compile']


def run_script(*args, cwd, **env):
    return subprocess.run(['bash', str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_script_parses():
    proc = subprocess.run(['bash', '-n', str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_dry_run_lists_every_step_and_touches_nothing(tmp_path, monkeypatch):
    proc = run_script('--dry-run', cwd=tmp_path, OUT=str(tmp_path / 'out'))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line[:1].isdigit()]
    assert [line.split()[1] for line in lines] == STEPS + ['report:']
    assert 'pytest -m cuda' in lines[1]
    assert not (tmp_path / 'out').exists() and list(tmp_path.iterdir()) == []

    # the benchmark commands it would run are accepted by the benchmarks' own argument parsers
    monkeypatch.syspath_prepend(str(REPO_ROOT / 'benchmarks'))
    import bench_hat
    import bench_lam
    import bench_memory

    commands = {line.split()[1]: shlex.split(line.split(': ', 1)[1]) for line in lines[2:-1]}
    for name, argv in commands.items():
        script = next(arg for arg in argv if arg.endswith('.py'))
        parser = {'bench_memory.py': bench_memory, 'bench_lam.py': bench_lam}.get(os.path.basename(script), bench_hat)
        args = parser.parse_args(argv[argv.index(script) + 1:])
        assert args.device == 'cuda' and str(args.json).startswith(str(tmp_path / 'out')), name


def test_bad_option_is_one_clear_line(tmp_path):
    proc = run_script('--budget', 'soon', cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count('\n') == 0 and '--budget' in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def stand_in_python(tmp_path):
    """A 'python3' that reports a GPU, passes every step and writes the --json/--markdown files it is given;
    the real interpreter runs the final report."""
    fake = tmp_path / 'bin' / 'python3'
    fake.parent.mkdir()
    fake.write_text(f'''#!/usr/bin/env bash
[ "$1" = - ] && exec {shlex.quote(sys.executable)} "$@"
args=("$@")
for i in "${{!args[@]}}"; do
    case "${{args[$i]}}" in
        --json) echo '{{"results": ["'"$*"'"]}}' > "${{args[$((i + 1))]}}" ;;
        --markdown) echo "| table of $(basename "${{args[0]}}") |" > "${{args[$((i + 1))]}}" ;;
    esac
done
echo "stand-in ran: $*"
''')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return str(fake)


def test_run_writes_results_and_tables_and_keeps_them(tmp_path, stand_in_python):
    out = tmp_path / 'out'
    proc = run_script('--out', str(out), cwd=tmp_path, PYTHON=stand_in_python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / 'results.json').read_text())
    assert list(results['steps']) == STEPS
    assert all(status.startswith('exit 0') for status in results['steps'].values()), results['steps']
    assert '--variants original:fp32' in results['forward']['results'][0]
    tables = (out / 'tables.md').read_text()
    assert all(f'## {name}' in tables for name in ('forward', 'memory', 'train', 'compile', 'lam'))
    assert '| table of bench_memory.py |' in tables
    assert sorted(p.name for p in out.iterdir()) == ['log.txt', 'results.json', 'tables.md']

    before = (out / 'results.json').read_text()
    again = run_script('--out', str(out), cwd=tmp_path, PYTHON=stand_in_python)
    assert again.returncode == 1 and '--overwrite' in again.stderr
    assert (out / 'results.json').read_text() == before


def test_steps_past_the_budget_are_skipped_and_reported(tmp_path, stand_in_python):
    out = tmp_path / 'out'
    proc = run_script('--out', str(out), '--budget', '10', cwd=tmp_path, PYTHON=stand_in_python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / 'results.json').read_text())
    assert set(results['steps'].values()) == {'skipped (budget spent)'}
    assert '(no table: step skipped (budget spent))' in (out / 'tables.md').read_text()
