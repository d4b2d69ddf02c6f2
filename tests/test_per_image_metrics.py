"""hat/test.py writes each dataset's per-image metrics (CSV + JSON) whose averages are the ones BasicSR logs."""
from __future__ import annotations

import csv
import json
import shutil

import cv2
import pytest
from basicsr.metrics import calculate_psnr, calculate_ssim
from test_report_support import in_process, logged_averages, test_run, tiny_weights
from test_train_support import DEMO_PHOTOS, write_photos

from hat.data.hr_only_dataset import modcrop
from hat.report.__main__ import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    """One real test run of a tiny HAT over two datasets: the demo's held-out photos and two scikit-image crops."""
    root = tmp_path_factory.mktemp('root')
    photos = write_photos(root / 'photos', 64)
    weights = tiny_weights(root / 'tiny.pth', seed=1)
    return test_run(root, 'tiny', weights, [('demo_val', DEMO_PHOTOS / 'val'), ('photos', photos)])


def test_averages_in_csv_and_json_equal_the_logged_ones(results):
    logged = logged_averages(results)
    assert set(logged) == {'demo_val', 'photos'}
    for dataset, metrics in logged.items():
        record = json.loads((results / f'metrics_{dataset}.json').read_text())
        with open(results / f'metrics_{dataset}.csv', newline='') as handle:
            rows = list(csv.DictReader(handle))
        assert rows[-1]['image'] == '(average)'
        assert set(metrics) == {'psnr', 'ssim'}
        for name, text in metrics.items():
            assert f'{record["average"][name]:.4f}' == text
            assert float(rows[-1][name]) == record['average'][name]
            values = [row[name] for row in record['images']]
            assert sum(values) / len(values) == pytest.approx(record['average'][name], rel=1e-12)
            assert [float(row[name]) for row in rows[:-1]] == values


def test_each_row_is_the_saved_image_scored_as_basicsr_scores_it(results):
    record = json.loads((results / 'metrics_demo_val.json').read_text())
    assert [row['image'] for row in record['images']] == ['chelsea', 'coins']
    assert record['metrics']['psnr'] == {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True}
    for row in record['images']:
        sr = cv2.imread(str(results / row['sr_path']))
        gt = modcrop(cv2.imread(str(results / row['gt_path'])), 2)
        assert (row['height'], row['width']) == sr.shape[:2] == gt.shape[:2]
        assert row['psnr'] == calculate_psnr(sr, gt, crop_border=2, test_y_channel=True)
        assert row['ssim'] == pytest.approx(calculate_ssim(sr, gt, crop_border=2, test_y_channel=True), abs=1e-12)
    assert not list(results.rglob('*.tmp'))


def test_a_second_dataset_of_the_same_name_is_refused_not_overwritten(results, tmp_path):
    weights = shutil.copy(results.parent.parent / 'tiny.pth', tmp_path / 'tiny.pth')
    photos = write_photos(tmp_path / 'photos', 64, ('coffee',))
    with pytest.raises(AssertionError, match="two test datasets are named 'photos'"):
        test_run(tmp_path, 'twice', weights, [('photos', photos), ('photos', DEMO_PHOTOS / 'val')])
    record = json.loads((tmp_path / 'results/twice/metrics_photos.json').read_text())
    assert [row['image'] for row in record['images']] == ['coffee']


def test_bicubic_row_scores_the_demo_photos_as_documented(results):
    table = in_process(main, results.parent, '--bicubic', '--csv', 'tiny')
    assert table.returncode == 0 and table.stderr == ''
    bicubic = table.stdout.splitlines()[1].split(',')
    assert bicubic[:3] == ['Bicubic', '30.04', '0.8449']  # docs/training.md: MATLAB bicubic on demo/photos/val
