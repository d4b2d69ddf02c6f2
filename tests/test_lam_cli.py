"""``hat-lam`` as users run it: real photos, HAT files, BasicSR option files, spandrel files, refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO_ROOT, TINY_CONFIG, sample_photo, torch_threads
from PIL import Image

import hat
from hat.analysis.cli import main

#: A tiny SwinIR x2 in BasicSR's registry (window 8, like the tiny HAT).
SWINIR = dict(type='SwinIR', upscale=2, in_chans=3, img_size=16, window_size=8, img_range=1.0, depths=[2, 2],
              embed_dim=24, num_heads=[3, 3], mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')

JSON_KEYS = {'model', 'image', 'x', 'y', 'window', 'di', 'seconds', 'map', 'figure'}


@pytest.fixture(scope='module')
def workdir(tmp_path_factory) -> Path:
    """A folder with a real photo crop, a tiny HAT x2 file, a tiny SwinIR's weights and its option file."""
    folder = tmp_path_factory.mktemp('lam_cli')
    Image.fromarray(sample_photo('astronaut')[40:120, 160:240]).save(folder / 'face.png')
    Image.fromarray(sample_photo('astronaut')[40:48, 160:168]).save(folder / 'tiny.png')
    torch.manual_seed(0)
    hat.save_weights(folder / 'hat_x2.pth', hat.HAT(**TINY_CONFIG).state_dict())
    hat.save_weights(folder / 'hat_x3.pth', hat.HAT(**{**TINY_CONFIG, 'upscale': 3}).state_dict())
    from basicsr.archs.swinir_arch import SwinIR

    swinir = SwinIR(**{k: v for k, v in SWINIR.items() if k != 'type'})
    torch.save({'params': swinir.state_dict()}, folder / 'swinir.pth')
    torch.save(swinir.state_dict(), folder / 'swinir_bare.pth')
    options = {'network_g': SWINIR, 'path': {'pretrain_network_g': 'swinir.pth'}}
    (folder / 'swinir.yml').write_text(yaml.safe_dump(options))
    return folder


def hat_lam(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m hat.analysis`` from ``cwd`` on one thread."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO_ROOT)}
    return subprocess.run([sys.executable, '-W', 'ignore', '-m', 'hat.analysis', *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_real_photo_writes_every_file_and_prints_the_di(workdir):
    run = hat_lam(workdir, '-m', 'hat_x2.pth', '-i', 'face.png', '--at', '30', '40', '--window', '16',
                  '--fold', '6', '-o', 'out_hat', '--json')
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    record = json.loads(line)
    assert set(record) >= JSON_KEYS
    assert (record['model'], record['x'], record['y'], record['window']) == ('hat_x2', 30, 40, 16)
    assert 0 < record['di'] < 100 and record['seconds'] > 0
    attribution_map = np.load(workdir / record['map'])
    assert attribution_map.dtype == np.float32 and attribution_map.shape == (40, 40)
    assert attribution_map.max() == 1.0 and attribution_map.min() >= 0
    with Image.open(workdir / record['figure']) as figure:
        assert figure.width >= 3 * 80 and figure.height > 80  # three HR-size panels and a caption
    assert sorted(p.name for p in (workdir / 'out_hat').iterdir()) == sorted(
        [Path(record['map']).name, Path(record['figure']).name])


def test_hat_and_basicsr_swinir_side_by_side(workdir):
    run = hat_lam(workdir, '-m', 'HAT=hat_x2.pth', '-m', 'SwinIR=swinir.yml', '-i', 'face.png', '--at', '30', '40',
                  '--fold', '4', '-o', 'out_pair', '--json')
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r['model'] for r in records] == ['HAT', 'SwinIR']
    assert records[1]['kind'] == 'BasicSR SwinIR'
    assert records[0]['comparison'] == records[1]['comparison']
    with Image.open(workdir / records[0]['comparison']) as figure, Image.open(workdir / records[0]['figure']) as one:
        assert figure.width == one.width and figure.height > 2 * one.height - 10  # a row per network
    maps = [np.load(workdir / r['map']) for r in records]
    assert not np.allclose(maps[0], maps[1])


def test_spandrel_loaded_file(workdir):
    pytest.importorskip('spandrel')
    run = hat_lam(workdir, '-m', 'swinir_bare.pth', '-i', 'face.png', '--at', '8', '8', '--fold', '4',
                  '-o', 'out_spandrel', '--json')
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record['kind'].startswith('spandrel') and np.load(workdir / record['map']).shape == (40, 40)


def test_lr_input_and_feature_maps(workdir):
    run = hat_lam(workdir, '--features', '-m', 'hat_x2.pth', '-m', 'swinir.yml', '-i', 'face.png', '--lr',
                  '-o', 'out_features', '--json')
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [len(r['groups']) for r in records] == [2, 2]
    assert all(g['blockiness'] > 0 for r in records for g in r['groups'])
    assert all((workdir / r['figure']).is_file() for r in records)


def test_window_outside_the_image_is_refused_with_one_line_and_nothing_written(workdir):
    run = hat_lam(workdir, '-m', 'hat_x2.pth', '-i', 'face.png', '--at', '70', '0', '--fold', '2', '-o', 'refused')
    assert run.returncode == 2 and run.stdout == ''
    assert run.stderr.strip().splitlines() == ['hat-lam: error: the 16x16 window at x=70, y=0 is not inside the '
                                               '80x80 SR image; choose x in 0..64 and y in 0..64']
    assert not (workdir / 'refused').exists()


@pytest.mark.parametrize('args, problem', [
    (['-m', 'hat_x2.pth', '-i', 'face.png', '--at', '0', '0', '--window', '0'], 'at least 1'),
    (['-m', 'hat_x2.pth', '-i', 'tiny.png', '--at', '0', '0', '--window', '4'], 'kernel'),
    (['-m', 'hat_x2.pth', '-m', 'hat_x3.pth', '-i', 'face.png', '--at', '0', '0'], 'different scales'),
    (['-m', 'missing.pth', '-i', 'face.png', '--at', '0', '0'], 'does not exist'),
    (['--features', '-m', 'hat_x2.pth', '-i', 'tiny.png'], 'window size'),
])
def test_bad_inputs_are_refused_with_nothing_written(workdir, monkeypatch, capsys, args, problem):
    monkeypatch.chdir(workdir)
    assert main([*args, '--fold', '2', '-o', 'refused']) == 2
    captured = capsys.readouterr()
    assert problem in captured.err and len(captured.err.strip().splitlines()) == 1 and captured.out == ''
    assert not (workdir / 'refused').exists()


def test_existing_outputs_are_not_replaced(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    args = ['-m', 'hat_x2.pth', '-i', 'face.png', '--at', '10', '10', '--fold', '2', '-o', 'out_twice']
    with torch_threads(1):
        assert main(args) == 0
        before = {p.name: p.stat().st_mtime_ns for p in (workdir / 'out_twice').iterdir()}
        assert main(args) == 2
    assert 'already exists' in capsys.readouterr().err
    assert before == {p.name: p.stat().st_mtime_ns for p in (workdir / 'out_twice').iterdir()}
