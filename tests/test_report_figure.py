"""python -m hat.report.figure: the crop comparison from saved images, boxes given or found where runs differ."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from test_report_support import fake_run, in_process
from test_train_support import write_photos

from hat.report.figure import main

#: Where run "damaged" wrecks its output (x, y, side) in the 96x96 photo.
DAMAGE = (56, 24, 20)


@pytest.fixture
def runs(tmp_path):
    """Two runs over one photo: "noisy" adds mild noise everywhere, "damaged" also flattens one square."""
    gt_folder = write_photos(tmp_path / 'gt', 96, ('astronaut',))
    gt = cv2.imread(str(gt_folder / 'astronaut.png'))
    noise = np.random.default_rng(0).normal(0, 2, gt.shape)
    noisy = np.clip(gt + noise, 0, 255).astype(np.uint8)
    damaged = noisy.copy()
    x, y, side = DAMAGE
    damaged[y:y + side, x:x + side] = 128
    fake_run(tmp_path / 'noisy', 'photos', {'astronaut': noisy}, gt_folder)
    fake_run(tmp_path / 'damaged', 'photos', {'astronaut': damaged}, gt_folder)
    return tmp_path


def figure(cwd, *args):
    result = in_process(main, cwd, *args)
    return result.returncode, result.stdout, result.stderr


def test_automatic_box_lands_where_the_runs_differ_most(runs):
    code, out, err = figure(runs, 'noisy', 'damaged', '--image', 'astronaut', '--box-size', '16', '-o', 'fig.png')
    assert code == 0 and err == '', err
    x, y, w, h = (int(v) for v in out.split()[-1].split(','))
    dx, dy, side = DAMAGE
    overlap = max(0, min(x + w, dx + side) - max(x, dx)) * max(0, min(y + h, dy + side) - max(y, dy))
    assert (w, h) == (16, 16) and overlap >= w * h * 0.75, (x, y)
    image = np.asarray(Image.open(runs / 'fig.png').convert('RGB'))
    assert image.shape[1] == 1000
    reds = np.argwhere((image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60))
    assert reds.size and reds[:, 1].max() < image.shape[1] / 2, 'the box belongs on the ground-truth panel (left)'


def test_given_boxes_give_one_row_each_and_two_boxes_do_not_overlap(runs):
    code, out, _ = figure(runs, 'noisy', 'damaged', '--image', 'astronaut', '--box', '0,0,32,16',
                          '--box', '40,40,20,20', '-o', 'two.png', '--width', '640')
    assert code == 0 and out.split()[-2:] == ['0,0,32,16', '40,40,20,20']
    assert Image.open(runs / 'two.png').width == 640
    code, out, _ = figure(runs, 'noisy', 'damaged', '--image', 'astronaut', '--boxes', '3', '-o', 'three.png')
    boxes = [tuple(int(v) for v in b.split(',')) for b in out.split()[-3:]]
    for i, (x, y, w, _) in enumerate(boxes):
        for bx, by, _, _ in boxes[i + 1:]:
            assert x >= bx + w or bx >= x + w or y >= by + w or by >= y + w


def test_bad_input_gets_one_line_and_no_file(runs):
    different = runs / 'other_size'
    fake_run(different, 'photos', {'astronaut': np.zeros((90, 96, 3), np.uint8)}, runs / 'gt')
    no_images = fake_run(runs / 'no_images', 'photos', {'astronaut': np.zeros((96, 96, 3), np.uint8)}, runs / 'gt')
    for path in no_images.rglob('*.png'):
        path.unlink()
    unsaved = fake_run(runs / 'unsaved', 'photos', {'astronaut': np.zeros((96, 96, 3), np.uint8)}, runs / 'gt')
    record = json.loads((unsaved / 'metrics_photos.json').read_text())
    record['images'][0]['sr_path'] = None
    (unsaved / 'metrics_photos.json').write_text(json.dumps(record))
    (runs / 'fig.png').write_bytes(b'keep')
    cases = {('noisy', '--box', '90,0,16,16'): 'is not inside the 96x96 image',
             ('noisy', 'other_size'): 'is 96x90 but the ground truth',
             ('noisy', 'gt'): 'gt is not a test run',
             ('noisy', '--dataset', 'Set5'): "has no dataset 'Set5'",
             ('no_images',): 'the SR image of no_images',
             ('noisy', 'unsaved'): 'unsaved did not save its images; test it again with `val.save_img: true`',
             ('noisy', '--output', 'fig.png'): 'fig.png exists; pass --overwrite'}
    for args, message in cases.items():
        output = [] if '--output' in args else ['-o', 'bad.png']
        code, out, err = figure(runs, *args, '--image', 'astronaut', *output)
        assert code == 2 and out == '' and len(err.splitlines()) == 1 and message in err, (args, err)
    assert not (runs / 'bad.png').exists() and (runs / 'fig.png').read_bytes() == b'keep'
    assert not list(runs.glob('.*.tmp'))


def test_the_command_runs_from_the_shell(runs):
    result = subprocess.run([sys.executable, '-m', 'hat.report.figure', 'noisy', '--image', 'astronaut', '--box',
                             '1,2,300,4', '-o', 'x.png'], cwd=runs, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith('hat.report.figure: error: box 1,2,300,4')
    assert not (runs / 'x.png').exists()
