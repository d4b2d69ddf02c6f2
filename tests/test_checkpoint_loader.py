"""Reading checkpoints, inferring the architecture from weights alone, and loading strictly."""
import json
import pickle

import pytest
import torch

from hat import HAT, CheckpointError, create_hat, load_hat, read_state_dict
from hat.weights.checkpoint import infer_config, load_weights
from tests.conftest import REFERENCE_DIR, TINY_CONFIG

REFERENCE = json.loads((REFERENCE_DIR / 'hat_official_state_dicts.json').read_text())


@pytest.fixture(scope='module')
def tiny_state():
    torch.manual_seed(1)
    return HAT(**TINY_CONFIG).state_dict()


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_infers_every_published_layout(name):
    entry = REFERENCE[name]
    state = {k: torch.zeros(shape, dtype=getattr(torch, dtype)) for k, (shape, dtype) in entry['state_dict'].items()}
    assert infer_config(state) | {'img_size': 64} == {**entry['config'], 'qkv_bias': True, 'patch_norm': True}


@pytest.mark.parametrize('config', [
    dict(embed_dim=30, depths=[1, 3], num_heads=[5, 3], window_size=8, overlap_ratio=0.25, upscale=8, in_chans=1,
         resi_connection='identity', mlp_ratio=1.5, compress_ratio=7, squeeze_factor=4, qkv_bias=False,
         patch_norm=False),
    dict(embed_dim=24, depths=[2], num_heads=[2], window_size=12, overlap_ratio=0.34, upscale=1, ape=True,
         img_size=24, squeeze_factor=6),
    dict(embed_dim=24, depths=[2, 1, 1], num_heads=[2, 4, 6], window_size=6, overlap_ratio=0.0, upscale=3,
         squeeze_factor=6, img_range=255.0),
])
def test_rebuilds_unusual_layouts_with_identical_outputs(config):
    torch.manual_seed(0)
    model = HAT(**config).eval()
    overrides = {'img_range': config['img_range']} if 'img_range' in config else {}
    rebuilt = load_hat(model.state_dict(), **overrides)
    x = torch.rand(1, config.get('in_chans', 3), 24, 24)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


@pytest.mark.parametrize('layout', ['params_ema', 'params', 'bare', 'ddp'])
def test_reads_basicsr_and_bare_checkpoints(tmp_path, tiny_state, layout):
    other = {k: v + 1 if v.is_floating_point() else v for k, v in tiny_state.items()}
    content = {
        'params_ema': {'params': other, 'params_ema': tiny_state},
        'params': {'params': tiny_state},
        'bare': tiny_state,
        'ddp': {'params': {f'module.{k}': v for k, v in tiny_state.items()}},
    }[layout]
    path = tmp_path / 'net.pth'
    torch.save(content, path)
    state = read_state_dict(path)
    assert state.keys() == tiny_state.keys()
    assert all(torch.equal(state[k], tiny_state[k]) for k in state)
    model = load_hat(path)
    assert not model.training and model.upscale == 2 and model.window_size == 8


def test_explicit_param_key(tmp_path, tiny_state):
    path = tmp_path / 'net.pth'
    torch.save({'params': tiny_state}, path)
    with pytest.raises(CheckpointError, match="no 'params_ema' entry"):
        read_state_dict(path, param_key='params_ema')


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        load_hat(tmp_path / 'nowhere.pth')


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    path.write_bytes(pickle.dumps({'params': object()}))
    with pytest.raises(CheckpointError, match='weights_only'):
        read_state_dict(path)


def test_non_hat_checkpoint_lists_missing_keys(tmp_path):
    path = tmp_path / 'vgg.pth'
    torch.save({'params': torch.nn.Conv2d(3, 8, 3).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r'not a HAT checkpoint: missing keys \[.conv_first.weight'):
        load_hat(path)


def test_other_variant_lists_mismatched_shapes(tiny_state):
    model = HAT(**{**TINY_CONFIG, 'embed_dim': 36, 'squeeze_factor': 6})
    with pytest.raises(CheckpointError, match=r'another HAT variant.*conv_first.weight: checkpoint \(24, 3, 3, 3\) '
                                              r'vs model \(36, 3, 3, 3\)'):
        load_weights(model, tiny_state)


def test_other_depth_lists_missing_keys(tiny_state):
    model = HAT(**{**TINY_CONFIG, 'depths': [2, 3], 'num_heads': [3, 3]})
    with pytest.raises(CheckpointError, match=r'missing keys \[.layers.1.residual_group.blocks.2'):
        load_weights(model, tiny_state)


def test_checkpoint_without_index_buffers_still_loads(tiny_state):
    state = {k: v for k, v in tiny_state.items() if not k.startswith('relative_position_index')}
    model = load_hat(state)
    assert torch.equal(model.relative_position_index_OCA, tiny_state['relative_position_index_OCA'])


def test_preset_by_family_and_scale():
    model = create_hat('HAT-S', upscale=8, depths=[1], num_heads=[6])
    assert model.upscale == 8 and model.embed_dim == 144
    with pytest.raises(ValueError, match="unknown HAT variant 'HAT-XL'"):
        create_hat('HAT-XL')


# --- files that are not checkpoints: one sentence that names the problem and what to do (issue 10, issue 11)

def _tiny_safetensors(tmp_path, tiny_state, name='net.safetensors'):
    from safetensors.torch import save_file

    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(path))
    return path


def test_empty_file_is_named_as_empty(tmp_path):
    path = tmp_path / 'HAT_SRx4.pth'
    path.touch()
    with pytest.raises(CheckpointError, match=r"HAT_SRx4.pth' is empty \(0 bytes\).*fetch the file again"):
        read_state_dict(path)


@pytest.mark.parametrize('text, says', [
    ('hello\nworld\n', "is a text file \\(it starts with 'hello'\\)"),
    ('', 'is a text file'),  # only whitespace
    ('<!DOCTYPE html><html><body>Download</body></html>', 'is a web page'),
    ('version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n', 'Git LFS pointer.*git lfs pull'),
])
def test_text_file_is_named_as_text(tmp_path, text, says):
    path = tmp_path / 'weights.pth'
    path.write_text(text or '   \n')
    with pytest.raises(CheckpointError, match=says):
        read_state_dict(path)


def test_folder_is_named_as_a_folder_with_its_weights_files(tmp_path, tiny_state):
    folder = tmp_path / 'HAT_SRx4'
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file; it holds no .pth"):
        read_state_dict(folder)
    torch.save({'params': tiny_state}, folder / 'net_g_5.pth')
    with pytest.raises(CheckpointError, match='is a folder.*pass one of the weights files in it: net_g_5.pth'):
        load_hat(folder)


def test_training_state_is_named_as_such(tmp_path):
    path = tmp_path / '5000.state'
    torch.save({'epoch': 1, 'iter': 5000, 'optimizers': [], 'schedulers': []}, path)
    with pytest.raises(CheckpointError, match='is a training state.*models/net_g_5000.pth'):
        read_state_dict(path)


def test_safetensors_of_another_architecture(tmp_path):
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.Conv2d(64, 3, 3))
    path = _tiny_safetensors(tmp_path, conv.state_dict(), 'esrgan.safetensors')
    with pytest.raises(CheckpointError, match=r'not a HAT checkpoint: missing keys .*another architecture'):
        load_hat(path)


def test_truncated_safetensors(tmp_path, tiny_state):
    path = _tiny_safetensors(tmp_path, tiny_state)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r'is truncated: its header describes \d+ bytes of tensors but the file '
                                              r'holds \d+'):
        load_hat(path)
    path.write_bytes(data[:100])  # cut inside the header
    with pytest.raises(CheckpointError, match='truncated or damaged: its safetensors header says'):
        load_hat(path)


def test_safetensors_header_that_lies_about_sizes(tmp_path, tiny_state):
    path = _tiny_safetensors(tmp_path, tiny_state)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], 'little')
    header = json.loads(data[8:8 + size])
    header['conv_first.weight']['shape'] = [24, 3, 3, 4]  # claims 4 more bytes per row than it is given
    raw = json.dumps(header, separators=(',', ':')).encode().ljust(size)
    assert len(raw) == size
    path.write_bytes(data[:8] + raw + data[8 + size:])
    with pytest.raises(CheckpointError, match=r"header that does not match its data: tensor 'conv_first.weight' is "
                                              r'F32 \[24, 3, 3, 4\] \(3456 bytes\)'):
        load_hat(path)
    path.write_bytes(data[:8] + b'{"a": ' + data[14:])
    with pytest.raises(CheckpointError, match='damaged safetensors header'):
        load_hat(path)


def test_settings_weights_do_not_record_come_from_the_presets(tiny_state, monkeypatch):
    from hat.archs import hat_presets

    assert {k: infer_config(tiny_state)[k] for k in hat_presets.UNRECORDED_DEFAULTS} == \
        {k: hat_presets.PRESETS['HAT_SRx4'][k] for k in hat_presets.UNRECORDED_DEFAULTS}
    monkeypatch.setitem(hat_presets.UNRECORDED_DEFAULTS, 'conv_scale', 0.02)  # one home: change it there only
    assert infer_config(tiny_state)['conv_scale'] == 0.02
