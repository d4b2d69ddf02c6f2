"""Round trip with spandrel, the loader of chaiNNer and ComfyUI: it loads every file hat writes and computes
the same outputs, and hat loads weights saved from spandrel's HAT module."""
from __future__ import annotations

import pytest
import torch
from conftest import TINY_CONFIG
from safetensors.torch import save_file
from test_hat_model import model_options

from hat import HAT, load_hat
from hat.models.hat_model import HATModel
from hat.weights.convert import main as convert

spandrel = pytest.importorskip('spandrel')
TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.torch_threads


def training_files(tmp_path, network_format):
    """The network files a training run with EMA writes at one iteration."""
    model = HATModel(model_options(tmp_path, is_train=True, network_format=network_format))
    torch.manual_seed(8)
    model.net_g_ema.load_state_dict(HAT(**TINY_CONFIG).state_dict())
    model.save_network([model.net_g, model.net_g_ema], 'net_g', 5, param_key=['params', 'params_ema'])
    return sorted(p for p in tmp_path.iterdir() if p.suffix in ('.pth', '.safetensors'))


def converted_files(tmp_path):
    torch.manual_seed(9)
    source = tmp_path / 'source' / 'net_g_5.pth'
    source.parent.mkdir()
    torch.save({'params_ema': HAT(**TINY_CONFIG).state_dict()}, source)
    outputs = [tmp_path / 'model.pth', tmp_path / 'model.safetensors', tmp_path / 'model_fp16.safetensors',
               tmp_path / 'model_bf16.pth']
    for output, dtype in zip(outputs, ('keep', 'keep', 'fp16', 'bf16')):
        assert convert([str(source), str(output), '--dtype', dtype]) == 0
    return outputs


@pytest.mark.parametrize('writer', ['training pth', 'training safetensors', 'hat.weights.convert'])
def test_spandrel_loads_every_file_hat_writes_with_the_same_outputs(tmp_path, writer):
    converted = writer == 'hat.weights.convert'
    files = converted_files(tmp_path) if converted else training_files(tmp_path, writer.split()[1])
    assert len(files) == (4 if writer == 'hat.weights.convert' else 2 if 'safetensors' in writer else 1)
    x = torch.rand(1, 3, 24, 20)
    for path in files:
        descriptor = spandrel.ModelLoader().load_from_file(path)
        assert descriptor.architecture.id == 'HAT' and descriptor.scale == TINY_CONFIG['upscale']
        ours = load_hat(path)
        with torch.no_grad():
            difference = (descriptor.model.eval()(x) - ours(x)).abs().max().item()
        assert difference <= TOLERANCE, (path.name, difference)


def test_hat_loads_weights_saved_from_spandrels_module(tmp_path):
    from spandrel.architectures.HAT import HAT as SpandrelHAT

    torch.manual_seed(10)
    theirs = SpandrelHAT(img_size=64, embed_dim=30, depths=[1, 2], num_heads=[5, 3], window_size=8,
                         compress_ratio=5, squeeze_factor=10, overlap_ratio=0.5, mlp_ratio=2, upscale=3).eval()
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / 'theirs.safetensors'))
    torch.save(theirs.state_dict(), tmp_path / 'theirs.pth')
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        expected = theirs(x)
        for name in ('theirs.safetensors', 'theirs.pth'):
            ours = load_hat(tmp_path / name)
            assert ours.upscale == 3
            assert (ours(x) - expected).abs().max().item() <= TOLERANCE
