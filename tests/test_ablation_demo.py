"""python -m hat.scripts.ablation_demo: trains chosen variants on the bundled photos and prints one table."""
import os
import subprocess
import sys

import yaml

from hat import HAT
from hat.scripts.ablation_demo import RECIPE, VARIANTS
from tests.conftest import REPO_ROOT


def run_demo(tmp_path, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, '-m', 'hat.scripts.ablation_demo', *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_trains_variants_side_by_side_and_prints_one_table(tmp_path):
    result = run_demo(tmp_path, '--iters', '2', '--variants', 'published', 'wo_OCAB')
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split() for line in result.stdout.strip().splitlines()]
    assert header == ['variant', 'parameters', 'PSNR-Y', '(dB)', 'seconds']
    assert [row[0] for row in rows] == ['bicubic', 'published', 'wo_OCAB']
    assert rows[0][1:] == ['-', '30.04', '-']  # MATLAB bicubic on the held-out photos (docs/training.md)
    network = {k: v for k, v in yaml.safe_load(RECIPE.read_text())['network_g'].items() if k != 'type'}
    for name, params, psnr, seconds in rows[1:]:
        expected = sum(p.numel() for p in HAT(**{**network, **VARIANTS[name]}).parameters())
        assert int(params.replace(',', '')) == expected
        assert 5 < float(psnr) < 60 and float(seconds) > 0
    assert list(tmp_path.iterdir()) == []  # writes nothing


def test_unknown_variant_is_refused_in_one_line(tmp_path):
    result = run_demo(tmp_path, '--variants', 'published', 'wo_everything')
    assert result.returncode == 2 and result.stdout == ''
    assert result.stderr.strip().splitlines() == [
        f"ablation_demo: unknown variant 'wo_everything'; choose from: {', '.join(VARIANTS)}"]
