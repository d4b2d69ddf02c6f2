"""The architecture computes the original's function: float64 parity with reference outputs."""
from pathlib import Path

import pytest
import torch

from hat import HAT
from hat.archs.banded import banded_inference, banded_view, bands, body_band_rows, head_band_rows
from tests.conftest import REFERENCE_DIR, TINY_CONFIG, sample_photo, to_tensor

CASES = sorted((REFERENCE_DIR / 'parity').glob('*.pt'))


def test_reference_cases_exist():
    assert len(CASES) >= 3, f'parity references missing in {REFERENCE_DIR}'


@pytest.fixture(scope='module', params=CASES, ids=lambda p: Path(p).stem)
def reference_case(request, synth_weights):
    case = torch.load(request.param, weights_only=True)
    model = HAT(**case['config']).double().eval()
    model.load_state_dict(synth_weights.synth_state_dict(model.state_dict(), case['seed']), strict=True)
    return model, case


@pytest.mark.parametrize('fused', [False, True], ids=['explicit', 'fused'])
def test_float64_output_matches_reference(reference_case, fused):
    model, case = reference_case
    model.set_fused_attention(fused)
    with torch.no_grad():
        out = model(case['input'])
    assert out.shape == case['output'].shape
    assert (out - case['output']).abs().max().item() <= 1e-9


@pytest.mark.parametrize('fused', [False, True], ids=['explicit', 'fused'])
def test_inference_in_bands_of_one_window_row_matches_reference(reference_case, fused):
    """The smallest bands: every band edge cuts through the CAB convs, the OCAB windows, the
    shifted windows' wrap-around and the reconstruction head (one output row per band)."""
    model, case = reference_case
    model.set_fused_attention(fused)
    x = case['input']
    assert body_band_rows(1, *x.shape[::3], model.window_size) == model.window_size < x.shape[-2]
    with torch.no_grad(), banded_inference(model, 1):
        out = model(x)
    assert model.band_tokens is None  # the context restores whole-image inference
    assert (out - case['output']).abs().max().item() <= 1e-9


#: Bands that do not divide the 40-row input: body bands of 16, 16 and 8 rows, head bands of 32 and 8.
UNEVEN_TOKENS = 2 * 8 * 24


@pytest.mark.parametrize('band_tokens', [1, UNEVEN_TOKENS])
@pytest.mark.parametrize('variant', [
    {}, {'resi_connection': 'identity'}, {'use_ocab': False}, {'use_cab': False},
    {'use_channel_attention': False}, {'overlap_ratio': 0.0}, {'conv_scale': 0.0},
], ids=lambda v: ','.join(f'{k}={x}' for k, x in v.items()) or 'published')
def test_banded_inference_equals_whole_image_in_float64(band_tokens, variant):
    torch.manual_seed(0)
    model = HAT(**{**TINY_CONFIG, **variant}).double().eval()
    x = to_tensor(sample_photo('astronaut')[100:140, 200:221]).double()  # 40 x 21, padded to 40 x 24
    if band_tokens == UNEVEN_TOKENS:
        assert bands(40, body_band_rows(band_tokens, 1, 24, 8))[-1] == (32, 40)
        assert bands(40, head_band_rows(band_tokens, 1, 24))[-1] == (32, 40)
    with torch.no_grad():
        whole = model(x)
        model.set_banded(band_tokens)
        banded = model(x)
    assert (banded - whole).abs().max().item() <= 1e-12


def test_banded_inference_refuses_autograd_and_train_mode():
    model = HAT(**TINY_CONFIG)
    model.set_banded()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(RuntimeError, match='set_banded'):
        model.eval()(x)
    with torch.no_grad(), pytest.raises(RuntimeError, match='eval mode'):
        model.train()(x)
    with pytest.raises(ValueError, match='band_tokens'):
        model.set_banded(0)


def test_fused_matches_explicit_in_float32(reference_case):
    model, case = reference_case
    model = model.float()
    x = case['input'].float()
    with torch.no_grad():
        model.set_fused_attention(False)
        explicit = model(x)
        model.set_fused_attention(True)
        fused = model(x)
    assert torch.allclose(fused, explicit, rtol=1e-5, atol=1e-5)
    model.double()


def test_environment_switch_selects_explicit_path(monkeypatch):
    monkeypatch.setenv('HAT_FUSED_ATTN', '0')
    model = HAT(embed_dim=12, depths=[1], num_heads=[2], window_size=8, squeeze_factor=4)
    flags = {m.fused_attn for m in model.modules() if hasattr(m, 'fused_attn')}
    assert flags == {False}
    monkeypatch.setenv('HAT_FUSED_ATTN', '1')
    model = HAT(embed_dim=12, depths=[1], num_heads=[2], window_size=8, squeeze_factor=4)
    assert {m.fused_attn for m in model.modules() if hasattr(m, 'fused_attn')} == {True}


def test_banded_view_shares_the_weights_and_leaves_the_model_alone():
    model = HAT(**TINY_CONFIG).eval()
    view = banded_view(model, 1)
    assert model.band_tokens is None and view.band_tokens == 1
    assert view.conv_first.weight is model.conv_first.weight
    x = torch.rand(1, 3, 24, 16)
    with torch.no_grad():
        model.conv_last.bias.add_(1.0)  # a change to the model's weights is the view's too
        assert torch.allclose(view(x), model(x), atol=1e-5)
