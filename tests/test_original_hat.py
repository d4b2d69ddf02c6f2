"""benchmarks/original_hat.py, the original formulation the benchmarks compare against, computes
the original release's function: same state_dict keys, the recorded reference outputs, and this
project's network to 1e-9 in float64 with the same weights."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hat import HAT
from tests.conftest import REFERENCE_DIR, REPO_ROOT, TINY_CONFIG, sample_photo, to_tensor

REFERENCE = json.loads((REFERENCE_DIR / 'hat_official_state_dicts.json').read_text())
TINY_CASES = sorted(p for p in (REFERENCE_DIR / 'parity').glob('tiny*.pt'))


def load_original_hat():
    spec = importlib.util.spec_from_file_location('original_hat', REPO_ROOT / 'benchmarks' / 'original_hat.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OriginalHAT


OriginalHAT = load_original_hat()


@pytest.mark.parametrize('name', ['HAT-S_SRx3', 'HAT_SRx4', 'HAT-L_SRx2'])
def test_state_dict_layout_is_the_published_one(name):
    with torch.device('meta'):
        model = OriginalHAT(**REFERENCE[name]['config'])
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: shape for k, (shape, _) in REFERENCE[name]['state_dict'].items()}


@pytest.mark.parametrize('path', TINY_CASES, ids=lambda p: Path(p).stem)
def test_reproduces_recorded_original_outputs(path, synth_weights):
    case = torch.load(path, weights_only=True)
    model = OriginalHAT(**case['config']).double().eval()
    model.load_state_dict(synth_weights.synth_state_dict(model.state_dict(), case['seed']), strict=True)
    with torch.no_grad():
        out = model(case['input'])
    assert (out - case['output']).abs().max().item() <= 1e-9


@pytest.mark.parametrize('config', [
    TINY_CONFIG,
    dict(TINY_CONFIG, img_size=8),  # patch no larger than a window: no shifted windows
    dict(embed_dim=30, depths=[1, 3], num_heads=[5, 3], window_size=8, overlap_ratio=0.25, upscale=8, in_chans=1,
         resi_connection='identity', mlp_ratio=1.5, compress_ratio=7, squeeze_factor=4, qkv_bias=False,
         patch_norm=False),
    dict(embed_dim=24, depths=[2], num_heads=[2], window_size=12, overlap_ratio=0.34, upscale=1, ape=True,
         img_size=24, squeeze_factor=6, img_range=255.0),
    dict(embed_dim=24, depths=[1, 1], num_heads=[2, 4], window_size=6, overlap_ratio=0.0, upscale=3,
         squeeze_factor=6),
], ids=['tiny', 'no-shift', 'gray-x8', 'ape-x1', 'x3-no-overlap'])
def test_matches_this_projects_network_in_float64(config, synth_weights):
    ours = HAT(**config).double().eval()
    ours.load_state_dict(synth_weights.synth_state_dict(ours.state_dict(), 7), strict=True)
    original = OriginalHAT(**config).double().eval()
    original.load_state_dict(ours.state_dict(), strict=True)
    # ape fixes the input size to img_size; otherwise a 3 x 6 windows crop
    ws = config['window_size']
    height, width = (config['img_size'],) * 2 if config.get('ape') else (3 * ws, 6 * ws)
    photo = to_tensor(sample_photo('chelsea')[:height, 40:40 + width]).double()
    photo = torch.cat([photo, photo.flip(-1)])[:, :config.get('in_chans', 3)]
    with torch.no_grad():
        expected = ours(photo)
        out = original(photo)
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-9


def test_rejects_sizes_the_original_cannot_take():
    model = OriginalHAT(**TINY_CONFIG).eval()
    with pytest.raises(ValueError, match='multiples of window_size=8'):
        model(torch.rand(1, 3, 20, 16))
