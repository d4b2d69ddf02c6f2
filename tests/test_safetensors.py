"""Weights as .safetensors: every entry point reads them, the HAT config recorded in them is used, and
training saves networks as safetensors and resumes from them (issue 11 §1)."""
from __future__ import annotations

import os
import re
import subprocess

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, sample_photo
from safetensors import safe_open
from safetensors.torch import save_file
from test_hat_model import model_options
from test_train_support import run, tiny_options, write_options, write_photos

from hat import HAT, CheckpointError, Upscaler, load_hat, read_state_dict
from hat.models.hat_model import HATModel
from hat.models.realhat_model import RealHATGANModel, RealHATMSEModel
from hat.training.resume import load_resume_state, plan_resume
from hat.weights.checkpoint import read_checkpoint, save_weights


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(2)
    return HAT(**TINY_CONFIG).eval()


def save_bare(path, state_dict):
    """A safetensors file as other tools write it: the tensors, no metadata."""
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def subprocess_env():
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.path.dirname(os.path.dirname(__file__))}


def test_library_entry_points_read_safetensors(tmp_path, tiny):
    path = save_bare(tmp_path / 'tiny.safetensors', tiny.state_dict())
    assert read_state_dict(path).keys() == tiny.state_dict().keys()
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        assert torch.equal(load_hat(path)(x), tiny(x))
    image = sample_photo()[100:124, 200:220]
    assert np.array_equal(Upscaler(path).upscale(image), Upscaler(tiny).upscale(image))


def test_pretrain_network_g_reads_safetensors_in_hat_and_real_hat_models(tmp_path, tiny):
    path = save_bare(tmp_path / 'pretrained.safetensors', tiny.state_dict())
    model = HATModel(model_options(tmp_path, pretrain_network_g=str(path)))
    loaded = model.net_g.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny.state_dict().items())
    assert RealHATMSEModel.load_network is HATModel.load_network is RealHATGANModel.load_network


def test_upscale_command_reads_safetensors(tmp_path, tiny, python):
    weights = save_bare(tmp_path / 'tiny.safetensors', tiny.state_dict())
    photo = tmp_path / 'photo.png'
    cv2.imwrite(str(photo), sample_photo()[100:124, 200:220, ::-1])
    command = [python, '-m', 'hat.inference.upscale_cli', '-m', weights, '-i', photo, '-o', tmp_path / 'out']
    run = subprocess.run(command,
                         cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert cv2.imread(str(tmp_path / 'out' / 'photo.png')).shape == (48, 40, 3)


def test_export_command_reads_safetensors(tmp_path, tiny, monkeypatch):
    from hat.weights import export

    exported = []

    def record(net, output, opset, overwrite):  # the ONNX export itself is tested in test_export.py
        exported.append(net)
        output.write_bytes(b'onnx')

    monkeypatch.setattr(export, 'export_onnx', record)
    pytest.importorskip('onnxscript')
    weights = save_bare(tmp_path / 'tiny.safetensors', tiny.state_dict())
    assert export.main(['--weights', str(weights), '--output', str(tmp_path / 'tiny.onnx'), '--no-check']) == 0
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(exported[0](x), tiny(x))


@pytest.mark.parametrize('make, says', [
    (lambda p: p.touch(), "is empty (0 bytes), not a checkpoint"),
    (lambda p: p.write_text('not weights\n'), "is a text file (it starts with 'not weights')"),
    (lambda p: p.mkdir(), 'is a folder, not a checkpoint file'),
])
def test_upscale_names_a_broken_checkpoint_in_one_line(tmp_path, capsys, make, says):
    from hat.inference import upscale_cli as upscale

    weights = tmp_path / 'HAT_SRx4.safetensors'
    make(weights)
    photo = tmp_path / 'photo.png'
    cv2.imwrite(str(photo), sample_photo()[:16, :16])
    assert upscale.main(['-m', str(weights), '-i', str(photo), '-o', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert says in err and 'HAT_SRx4.safetensors' in err and len(err.strip().splitlines()) == 1, err


def test_recorded_config_is_used_instead_of_guessing(tmp_path):
    config = {**TINY_CONFIG, 'img_range': 255.0, 'conv_scale': 0.05}  # neither is visible in the weights
    torch.manual_seed(0)
    model = HAT(**config).eval()
    for name in ('recorded.safetensors', 'recorded.pth'):
        save_weights(tmp_path / name, model.state_dict(), config)
        loaded = load_hat(tmp_path / name)
        assert (loaded.img_range, read_checkpoint(tmp_path / name).config['conv_scale']) == (255.0, 0.05)
    guessed = load_hat(save_bare(tmp_path / 'bare.safetensors', model.state_dict()))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_hat(tmp_path / 'recorded.safetensors')(x), model(x))
        assert not torch.allclose(guessed(x), model(x))


def test_recorded_config_that_does_not_fit_the_weights_is_named(tmp_path, tiny):
    path = tmp_path / 'lying.safetensors'
    save_weights(path, tiny.state_dict(), {**TINY_CONFIG, 'embed_dim': 36})
    with pytest.raises(CheckpointError, match=r"config recorded in .*lying.safetensors.*does not fit its weights"):
        load_hat(path)
    save_weights(path, tiny.state_dict(), {**TINY_CONFIG, 'num_layers': 4})
    with pytest.raises(CheckpointError, match=r"records a 'hat_config' that is not a HAT config \(\['num_layers'\]\)"):
        load_hat(path)


def test_network_of_a_training_checkpoint_by_param_key(tmp_path, tiny):
    torch.manual_seed(5)
    ema = HAT(**TINY_CONFIG).state_dict()
    save_weights(tmp_path / 'net_g_7.safetensors', tiny.state_dict(), param_key='params')
    with pytest.raises(CheckpointError, match="has no 'params_ema' entry: it holds 'params' and "
                                              "'net_g_ema_7.safetensors' does not exist"):
        read_state_dict(tmp_path / 'net_g_7.safetensors', 'params_ema')
    save_weights(tmp_path / 'net_g_ema_7.safetensors', ema, param_key='params_ema')
    got = read_checkpoint(tmp_path / 'net_g_7.safetensors', 'params_ema')
    assert got.path.endswith('net_g_ema_7.safetensors') and torch.equal(got.state_dict['conv_last.bias'],
                                                                        ema['conv_last.bias'])
    got = read_checkpoint(tmp_path / 'net_g_ema_7.safetensors', 'params')
    assert got.path.endswith('net_g_7.safetensors') and got.param_key == 'params'
    assert torch.equal(read_state_dict(tmp_path / 'net_g_7.safetensors')['conv_last.bias'],
                       tiny.state_dict()['conv_last.bias'])


@pytest.mark.parametrize('companion', [b'', b'{"a"', b'\x08\x00\x00\x00\x00\x00\x00'])
def test_a_truncated_companion_file_is_named_in_one_line(tmp_path, tiny, companion):
    """The companion of a training network file is read without the format sniffing of the file asked for."""
    save_weights(tmp_path / 'net_g_7.safetensors', tiny.state_dict(), param_key='params')
    (tmp_path / 'net_g_ema_7.safetensors').write_bytes(companion)
    with pytest.raises(CheckpointError, match=rf"'.*net_g_ema_7.safetensors' is truncated: {len(companion)} bytes, "
                                              'shorter than the 8-byte size that starts every safetensors file'):
        read_checkpoint(tmp_path / 'net_g_7.safetensors', 'params_ema')


def _safetensors_experiment(tmp_path):
    models, states = tmp_path / 'models', tmp_path / 'training_states'
    models.mkdir()
    states.mkdir()
    opt = dict(name='exp', auto_resume=True, network_g=dict(type='HAT'),
               path=dict(models=str(models), training_states=str(states), resume_state=None,
                         network_format='safetensors'))
    return opt, models, states


def test_auto_resume_finds_safetensors_networks_and_skips_broken_ones(tmp_path, tiny):
    opt, models, states = _safetensors_experiment(tmp_path)
    for it in (2, 4, 6):
        save_weights(models / f'net_g_{it}.safetensors', tiny.state_dict(), param_key='params')
        save_weights(models / f'net_g_ema_{it}.safetensors', tiny.state_dict(), param_key='params_ema')
        torch.save({'epoch': 0, 'iter': it, 'optimizers': [], 'schedulers': []}, states / f'{it}.state')
    data = (models / 'net_g_ema_6.safetensors').read_bytes()
    (models / 'net_g_ema_6.safetensors').write_bytes(data[:len(data) // 3])  # a copy cut short
    assert plan_resume(opt).state_path == str(states / '4.state')
    state = load_resume_state(opt)
    assert state['iter'] == 4
    assert opt['path']['pretrain_network_g'] == str(models / 'net_g_4.safetensors')


@pytest.mark.slow
def test_training_saves_safetensors_that_resume_and_load_everywhere(tmp_path):
    spandrel = pytest.importorskip('spandrel')
    train_dir = write_photos(tmp_path / 'hr')
    opt = tiny_options('st', train_dir, None, total_iter=2, path=dict(network_format='safetensors'))
    yml = write_options(opt, tmp_path / 'st.yml')
    run('train', tmp_path, '-opt', str(yml))
    models = tmp_path / 'experiments' / 'st' / 'models'
    assert sorted(p.name for p in models.iterdir()) == [
        'net_g_2.safetensors', 'net_g_ema_2.safetensors', 'net_g_ema_latest.safetensors', 'net_g_latest.safetensors']
    with safe_open(str(models / 'net_g_ema_2.safetensors'), 'pt') as handle:
        assert handle.metadata()['param_key'] == 'params_ema'

    ours = load_hat(models / 'net_g_ema_2.safetensors')
    theirs = spandrel.ModelLoader().load_from_file(models / 'net_g_ema_2.safetensors').model.eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() <= 1e-4

    write_options({**opt, 'train': {**opt['train'], 'total_iter': 4}}, yml)
    run('train', tmp_path, '-opt', str(yml), '--auto_resume')
    logs = sorted((tmp_path / 'experiments' / 'st').glob('train_*.log'))
    text = logs[-1].read_text()
    assert re.search(r'Resuming training from epoch: \d+, iter: 2', text)
    assert re.search(r'Loading HAT from .*net_g_2.safetensors \[params\]', text)
    assert re.search(r'Loading HAT from .*net_g_ema_2.safetensors \[params_ema\]', text)
    assert (models / 'net_g_ema_4.safetensors').is_file() and not list(models.glob('*.pth'))
