"""python -m hat.report: one table of several runs, aligned by dataset, best marked, bad runs named and left out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_report_support import in_process

from hat.report.__main__ import main
from hat.report.per_image import averages, file_stem, write_per_image


def write_run(folder: Path, results: dict[str, dict[str, float]]) -> Path:
    """A results folder whose per-image files give these averages (one image per dataset)."""
    folder.mkdir(parents=True)
    for dataset, values in results.items():
        rows = [dict(image='img', width=8, height=8, sr_path=None, gt_path=None, lq_path=None, **values)]
        record = dict(run=folder.name, dataset=dataset, iter=folder.name, scale=4,
                      metrics={name: {'type': f'calculate_{name}', 'crop_border': 4} for name in values},
                      average=averages(rows, list(values)), images=rows)
        write_per_image(folder, file_stem(dataset), record, overwrite=False)
    return folder


def report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m hat.report ARGS`` in ``cwd``, in this process (one subprocess test below covers the command)."""
    return in_process(main, cwd, *args)


@pytest.fixture
def runs(tmp_path):
    """Three runs: different dataset sets and orders, a lower-is-better metric, an older run known by its log only."""
    write_run(tmp_path / 'HAT_SRx4', {'Urban100': dict(psnr=27.971, ssim=0.8368),
                                       'Set5': dict(psnr=32.921, ssim=0.9047)})
    write_run(tmp_path / 'HAT-S_SRx4', {'Set5': dict(psnr=32.922, ssim=0.9053), 'Manga109': dict(psnr=32.38, ssim=0.9),
                                         'Set14': dict(psnr=29.15, ssim=0.7958)})
    old = tmp_path / 'SwinIR'
    old.mkdir()
    (old / 'test_SwinIR_20230101_000000.log').write_text(
        '2023-01-01 00:00:00,000 INFO: Validation Set5\n\t # psnr: 32.7200\tBest: 32.7200 @ SwinIR iter\n'
        '\t # ssim: 0.9021\n2023-01-01 00:00:01,000 INFO: Validation Set14\n\t # psnr: 28.9400\n\t # ssim: 0.7914\n')
    return tmp_path


def test_markdown_lines_up_datasets_by_name_and_bolds_the_best(runs):
    result = report(runs, 'HAT_SRx4', 'HAT-S_SRx4', 'SwinIR')
    assert result.returncode == 0 and result.stderr == ''
    lines = result.stdout.splitlines()
    assert lines[0] == ('| run | Set5 PSNR | Set5 SSIM | Set14 PSNR | Set14 SSIM | Urban100 PSNR | Urban100 SSIM | '
                        'Manga109 PSNR | Manga109 SSIM |')
    assert lines[2] == '| HAT\\_SRx4 | **32.92** | 0.9047 | - | - | 27.97 | 0.8368 | - | - |'
    assert lines[3] == '| HAT-S\\_SRx4 | **32.92** | **0.9053** | **29.15** | **0.7958** | - | - | 32.38 | 0.9000 |'
    assert lines[4] == '| SwinIR | 32.72 | 0.9021 | 28.94 | 0.7914 | - | - | - | - |'


def test_latex_and_csv(runs):
    tex = report(runs, '--latex', 'SwinIR', 'HAT-S_SRx4').stdout
    assert r'\multicolumn{2}{c}{Set5} & \multicolumn{2}{c}{Set14} & \multicolumn{2}{c}{Manga109} \\' in tex
    assert r'HAT-S\_SRx4 & \textbf{32.92} & \textbf{0.9053} & \textbf{29.15} & \textbf{0.7958} & 32.38 & 0.9000 \\' \
        in tex
    assert r'SwinIR & 32.72 & 0.9021 & 28.94 & 0.7914 & -- & -- \\' in tex
    assert tex.count(r'\cmidrule') == 3 and r'\begin{tabular}{l cc cc cc}' in tex
    rows = report(runs, '--csv', 'SwinIR', 'HAT_SRx4').stdout.splitlines()
    assert rows == ['run,Set5 PSNR,Set5 SSIM,Set14 PSNR,Set14 SSIM,Urban100 PSNR,Urban100 SSIM',
                    'SwinIR,32.72,0.9021,28.94,0.7914,,', 'HAT_SRx4,32.92,0.9047,,,27.97,0.8368']


def test_lower_is_better_metrics_mark_the_minimum(tmp_path):
    write_run(tmp_path / 'a', {'RealSRSet': dict(niqe=4.2)})
    write_run(tmp_path / 'b', {'RealSRSet': dict(niqe=3.9)})
    lines = report(tmp_path, 'a', 'b').stdout.splitlines()
    assert lines[2:] == ['| a | 4.2000 |', '| b | **3.9000** |']


def test_runs_without_usable_numbers_are_named_and_left_out(runs):
    (runs / 'empty').mkdir()
    broken = write_run(runs / 'broken', {'Set5': dict(psnr=30.0)})
    (broken / 'metrics_Set5.json').write_text('{"dataset": "Set5", "metrics"')
    nan = write_run(runs / 'nan', {'Set5': dict(psnr=30.0)})
    record = json.loads((nan / 'metrics_Set5.json').read_text())
    record['average']['psnr'] = float('nan')
    (nan / 'metrics_Set5.json').write_text(json.dumps(record))
    result = report(runs, 'SwinIR', 'empty', 'broken', 'nan', 'missing')
    assert result.returncode == 0
    errors = result.stderr.splitlines()
    assert len(errors) == 4 and all(line.startswith('left out: ') for line in errors)
    assert 'empty is not a test run' in errors[0] and 'broken/metrics_Set5.json is not readable' in errors[1]
    assert 'average psnr is nan' in errors[2] and 'missing is not a folder' in errors[3]
    assert [line.split(' | ')[0] for line in result.stdout.splitlines()[2:]] == ['| SwinIR']
    nothing = subprocess.run([sys.executable, '-m', 'hat.report', 'empty'], cwd=runs, capture_output=True, text=True,
                             timeout=120)
    assert nothing.returncode == 2 and nothing.stdout == ''
    assert nothing.stderr.splitlines()[-1] == 'hat.report: error: none of the runs has numbers to show'
