"""The architecture computes the original's function: float64 parity with reference outputs."""
from pathlib import Path

import pytest
import torch

from hat import HAT
from hat.archs.hat_arch import BAND_TOKENS
from tests.conftest import REFERENCE_DIR

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


def test_inference_in_bands_of_one_window_row_matches_reference(reference_case):
    """The smallest bands: every band edge cuts through the CAB convs, the OCAB windows, the
    shifted windows' wrap-around and the reconstruction head (one output row per band)."""
    model, case = reference_case
    model.set_fused_attention(True)
    model.band_tokens = 1
    try:
        x = case['input']
        with torch.no_grad():
            assert model.band_rows(x) == model.window_size < x.shape[-2]
            out = model(x)
    finally:
        model.band_tokens = BAND_TOKENS
    assert (out - case['output']).abs().max().item() <= 1e-9


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
