"""python -m hat.weights.export: ONNX with dynamic batch/height/width, equal to PyTorch under onnxruntime."""
import subprocess

import numpy as np
import pytest
import torch

from hat import HAT
from hat.weights.export import main as export_main
from tests.conftest import TINY_CONFIG, load_synth_weights, sample_photo, to_tensor

pytest.importorskip('onnxscript', reason='ONNX export needs onnxscript (pip install onnx onnxscript)')
onnxruntime = pytest.importorskip('onnxruntime', reason='the comparison needs onnxruntime')
onnx = pytest.importorskip('onnx')


@pytest.fixture(scope='module')
def exported(tmp_path_factory, python):
    """A tiny synthetic-weight HAT saved as a checkpoint and exported once through the command line."""
    folder = tmp_path_factory.mktemp('export')
    model = HAT(**TINY_CONFIG).eval()
    model.load_state_dict(load_synth_weights().synth_state_dict(model.state_dict(), 5))
    weights = folder / 'tiny_x2.pth'
    torch.save({'params_ema': model.state_dict()}, weights)
    output = folder / 'tiny_x2.onnx'
    run = subprocess.run([python, '-m', 'hat.weights.export', '--weights', str(weights), '--output', str(output)],
                         capture_output=True, text=True, cwd=tmp_path_factory.getbasetemp(), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return model, weights, output, run.stdout


def test_command_checks_against_pytorch(exported):
    _, _, output, stdout = exported
    assert output.stat().st_size > 100_000
    assert 'onnxruntime vs PyTorch: max abs difference' in stdout


def test_graph_has_dynamic_batch_height_width_and_opset_17_or_newer(exported):
    _, _, output, _ = exported
    proto = onnx.load(str(output))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != '' for d in dims] == [True, False, True, True]  # channels fixed
    assert max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')) >= 17


def test_photo_of_odd_size_matches_pytorch_to_1e4(exported):
    model, _, output, _ = exported
    session = onnxruntime.InferenceSession(str(output), providers=['CPUExecutionProvider'])
    photo = torch.cat([to_tensor(sample_photo('chelsea')[40:77, 100:151]),
                       to_tensor(sample_photo('coffee')[200:237, 300:351])])  # 37 x 51: padded inside
    (got,) = session.run(['sr'], {'lr': photo.numpy()})
    with torch.no_grad():
        expected = model(photo).numpy()
    assert got.shape == (2, 3, 74, 102)
    assert np.abs(got - expected).max() <= 1e-4


def test_existing_output_is_kept_unless_overwrite(exported, python):
    _, weights, output, _ = exported
    before = output.read_bytes()
    run = subprocess.run([python, '-m', 'hat.weights.export', '--weights', str(weights), '--output', str(output)],
                         capture_output=True, text=True, cwd=output.parent, timeout=120)
    assert run.returncode == 2 and 'already exists' in run.stderr and '--overwrite' in run.stderr
    assert output.read_bytes() == before


def test_user_mistakes_are_one_line_unless_debug(exported, python, tmp_path, capsys):
    _, weights, _, _ = exported
    missing = [python, '-m', 'hat.weights.export', '--weights', str(tmp_path / 'missing.pth'), '--output',
               str(tmp_path / 'x.onnx')]
    run = subprocess.run(missing, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith('error: checkpoint not found')
    assert 'Traceback' not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert export_main(['--weights', str(weights), '--output', str(tmp_path / 'no' / 'x.onnx')]) == 2
    assert 'the folder of --output' in capsys.readouterr().err and not (tmp_path / 'no').exists()
    debug = subprocess.run([*missing, '--debug'], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert debug.returncode != 0 and 'Traceback' in debug.stderr


def test_old_opset_is_refused(exported, python, tmp_path):
    _, weights, _, _ = exported
    run = subprocess.run([python, '-m', 'hat.weights.export', '--weights', str(weights), '--output',
                          str(tmp_path / 'old.onnx'), '--opset', '16'],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and '--opset 16 is too old' in run.stderr
    assert not (tmp_path / 'old.onnx').exists()
