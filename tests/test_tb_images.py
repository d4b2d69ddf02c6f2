"""val.tb_images: N validation crops (bicubic | SR | GT) in TensorBoard at each validation, read back from events."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from test_train_support import run, tiny_options, write_options, write_photos

pytestmark = pytest.mark.slow


def test_training_logs_fixed_validation_crops_and_per_image_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    train_dir = write_photos(tmp_path / 'hr')
    val_dir = write_photos(tmp_path / 'val', 80, ('astronaut', 'coffee', 'rocket'))
    opt = tiny_options('tiny_tb', train_dir, val_dir, total_iter=4, logger=dict(use_tb_logger=True))
    opt['val'].update(val_freq=2, tb_images=2)
    run('train', tmp_path, '-opt', str(write_options(opt, tmp_path / 'tb.yml')))
    events = EventAccumulator(str(tmp_path / 'tb_logger' / 'tiny_tb'), size_guidance={IMAGES: 0})
    events.Reload()
    tags = sorted(events.Tags()[IMAGES])
    assert tags == ['val_images/held_out/astronaut', 'val_images/held_out/coffee']
    steps = [event.step for event in events.Images(tags[0])]
    assert steps[:2] == [2, 4] and len(steps) == 3  # val_freq 2, then the validation after training
    for tag in tags:
        logged = events.Images(tag)
        assert [event.step for event in logged] == steps
        strips = [np.asarray(Image.open(io.BytesIO(event.encoded_image_string))) for event in logged]
        assert strips[0].shape == (80, 3 * 80 + 2 * 4, 3)
        gt = strips[0][:, -80:]
        assert np.array_equal(gt, strips[1][:, -80:])  # the same crop each time
        assert (strips[0][:, 80:84] == 255).all()
    folder = tmp_path / 'experiments' / 'tiny_tb' / 'metrics'
    assert sorted(p.name for p in folder.iterdir()) == sorted(f'metrics_held_out_{i}.{ext}' for i in steps
                                                              for ext in ('csv', 'json'))
    record = json.loads((folder / 'metrics_held_out_4.json').read_text())
    assert [row['image'] for row in record['images']] == ['astronaut', 'coffee', 'rocket'] and record['iter'] == 4


def test_a_bad_tb_images_value_is_refused_before_training(tmp_path):
    opt = tiny_options('tiny_bad', write_photos(tmp_path / 'hr'), write_photos(tmp_path / 'val', 64, ('coffee',)))
    opt['val']['tb_images'] = -1
    result = run('train', tmp_path, '-opt', str(write_options(opt, tmp_path / 'bad.yml')), check=False, timeout=120)
    assert result.returncode != 0 and 'val.tb_images' in result.stderr and 'whole number >= 0' in result.stderr
    assert not (tmp_path / 'experiments').exists()
