"""hat-convert: training checkpoint -> inference weights (.pth or .safetensors, optionally fp16/bf16)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import types

import pytest
import torch
from basicsr.models.base_model import BaseModel
from conftest import REFERENCE_DIR, TINY_CONFIG
from safetensors import safe_open

from hat import HAT, CheckpointError, create_hat, load_hat, read_state_dict
from hat.weights.convert import main


@pytest.fixture(scope='module')
def training_checkpoint(tmp_path_factory):
    """A BasicSR training network file of the tiny HAT whose params and params_ema differ."""
    torch.manual_seed(3)
    params = HAT(**TINY_CONFIG).state_dict()
    torch.manual_seed(4)
    ema = HAT(**TINY_CONFIG).state_dict()
    path = tmp_path_factory.mktemp('experiment') / 'net_g_1000.pth'
    torch.save({'params': params, 'params_ema': ema}, path)
    return path, params, ema


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keeps_params_ema_by_default_or_the_param_key(tmp_path, training_checkpoint, capsys):
    source, params, ema = training_checkpoint
    assert main([str(source), str(tmp_path / 'ema.safetensors')]) == 0
    out = capsys.readouterr().out
    assert 'params_ema of custom HAT (embed_dim 24, depths [2, 2], window 8, x2), 228,653 parameters' in out
    assert re.search(r'wrote .*ema.safetensors: safetensors, float32, 1.0 MiB \(0.4\dx the input\)', out)
    assert same(read_state_dict(tmp_path / 'ema.safetensors'), ema)
    with safe_open(str(tmp_path / 'ema.safetensors'), 'pt') as handle:
        assert json.loads(handle.metadata()['hat_config'])['embed_dim'] == 24

    assert main([str(source), str(tmp_path / 'params.pth'), '--param-key', 'params']) == 0
    content = torch.load(tmp_path / 'params.pth', weights_only=True)
    assert sorted(content) == ['hat_config', 'params'] and same(content['params'], params)


@pytest.mark.parametrize('dtype, torch_dtype', [('fp16', torch.float16), ('bf16', torch.bfloat16)])
def test_half_precision_halves_the_size_and_keeps_the_index_buffers(tmp_path, training_checkpoint, dtype,
                                                                      torch_dtype):
    source, _, ema = training_checkpoint
    main([str(source), str(tmp_path / 'fp32.safetensors')])
    main([str(source), str(tmp_path / 'half.safetensors'), '--dtype', dtype])
    half = read_state_dict(tmp_path / 'half.safetensors')
    assert {v.dtype for k, v in half.items() if 'relative_position_index' not in k} == {torch_dtype}
    assert half['relative_position_index_SA'].dtype == torch.int64
    ratio = os.path.getsize(tmp_path / 'half.safetensors') / os.path.getsize(tmp_path / 'fp32.safetensors')
    assert 0.5 < ratio < 0.6  # the int64 index buffers stay as they are
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (load_hat(tmp_path / 'half.safetensors')(x) - load_hat(ema)(x)).abs().max() < 2e-2


def test_pth_output_loads_strictly_where_the_original_release_loads_weights(tmp_path, capsys):
    torch.manual_seed(0)
    state = create_hat('HAT-S_SRx4').state_dict()
    source = tmp_path / 'net_g_5000.pth'
    torch.save({'params_ema': {k: v for k, v in state.items() if 'relative_position_index' not in k}}, source)
    assert main([str(source), str(tmp_path / 'HAT-S_SRx4.pth')]) == 0
    assert 'params_ema of HAT-S_SRx4, 9,621,183 parameters' in capsys.readouterr().out

    official = json.loads((REFERENCE_DIR / 'hat_official_state_dicts.json').read_text())['HAT-S_SRx4']
    content = torch.load(tmp_path / 'HAT-S_SRx4.pth', weights_only=True)
    assert {k: [list(v.shape), str(v.dtype).removeprefix('torch.')] for k, v in content['params'].items()} == \
        official['state_dict']  # every key of the original's state_dict, index buffers included
    # BasicSR's own load_network (what the original release's test.py runs), strict, param_key_g: params_ema
    net = HAT(**official['config'])
    basicsr_model = types.SimpleNamespace(get_bare_model=lambda n: n, _print_different_keys_loading=lambda *a: None)
    BaseModel.load_network(basicsr_model, net, str(tmp_path / 'HAT-S_SRx4.pth'), True, 'params_ema')
    assert torch.equal(net.conv_last.weight, state['conv_last.weight'])


def test_existing_output_and_the_input_are_never_overwritten(tmp_path, training_checkpoint, capsys):
    source, _, ema = training_checkpoint
    output = tmp_path / 'model.safetensors'
    output.write_bytes(b'keep me')
    assert main([str(source), str(output)]) == 2
    assert "already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert output.read_bytes() == b'keep me'
    assert main([str(source), str(output), '--overwrite']) == 0
    assert same(read_state_dict(output), ema)
    before = output.read_bytes()
    assert main([str(output), str(output), '--overwrite']) == 2
    assert 'is the input file' in capsys.readouterr().err
    assert output.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.safetensors']


@pytest.mark.parametrize('args, says', [
    (['{src}', '{tmp}/model.onnx'], 'must end in .pth or .safetensors'),
    (['{src}', '{tmp}/missing/model.pth'], 'the output folder .* does not exist; create it first'),
    (['{src}', '{tmp}/model.pth', '--param-key', 'params_d'], "has no 'params_d' entry"),
    (['{tmp}/nowhere.pth', '{tmp}/model.pth'], "checkpoint not found: '.*nowhere.pth'"),
])
def test_user_mistakes_get_one_line(tmp_path, training_checkpoint, capsys, args, says):
    source = training_checkpoint[0]
    assert main([a.format(src=source, tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(f'error: .*{says}.*\n', err), err
    assert not list(tmp_path.iterdir())


def test_values_beyond_fp16_are_refused(tmp_path, training_checkpoint, capsys):
    _, params, _ = training_checkpoint
    torch.save({'params': {**params, 'conv_last.bias': params['conv_last.bias'] + 1e5}}, tmp_path / 'big.pth')
    assert main([str(tmp_path / 'big.pth'), str(tmp_path / 'half.pth'), '--dtype', 'fp16']) == 2
    assert "conv_last.bias has values beyond torch.float16's range" in capsys.readouterr().err
    assert not (tmp_path / 'half.pth').exists()


def test_command_line_without_and_with_debug(tmp_path, python):
    (tmp_path / 'empty.pth').touch()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.path.dirname(os.path.dirname(__file__))}
    run = subprocess.run([python, '-m', 'hat.weights.convert', 'empty.pth', 'out.safetensors'], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr) == (2, "error: 'empty.pth' is empty (0 bytes), not a checkpoint: a download "
                                               'or copy that did not finish; fetch the file again\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['empty.pth']
    with pytest.raises(CheckpointError, match='is empty'):  # --debug: the exception itself, with its traceback
        main([str(tmp_path / 'empty.pth'), str(tmp_path / 'out.safetensors'), '--debug'])


def test_config_option_records_what_weights_do_not_show(tmp_path, training_checkpoint):
    import yaml

    source, _, ema = training_checkpoint
    options = tmp_path / 'train.yml'
    options.write_text(yaml.safe_dump({'network_g': {'type': 'HAT', **TINY_CONFIG, 'img_range': 255.0}}))
    assert main([str(source), str(tmp_path / 'model.safetensors'), '--config', str(options)]) == 0
    model = load_hat(tmp_path / 'model.safetensors')
    assert model.img_range == 255.0
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), load_hat(ema, img_range=255.0)(x))
