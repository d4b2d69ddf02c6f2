"""The fast attention layout: per-kind shift masks, padded heads, blocks of windows, channels-last convs."""
import pytest
import torch

from hat import HAT
from hat.archs import kernels
from hat.archs.hat_arch import shifted_window_masks
from hat.archs.kernels import kernel_head_dim
from tests.conftest import TINY_CONFIG, load_synth_weights, sample_photo, to_tensor
from tests.oracles import shifted_window_mask

#: Head size 6 (padded to 8 on the fused path) and 8 (not padded); x3 exercises the other upsampler.
ODD_HEADS_CONFIG = dict(TINY_CONFIG, embed_dim=30, num_heads=[5, 3], upscale=3, drop_path_rate=0.0)


@pytest.mark.parametrize('h,w,ws', [(16, 24, 8), (8, 8, 8), (32, 16, 16), (12, 18, 6), (8, 32, 8)])
def test_mask_kinds_equal_the_full_mask_of_every_window(h, w, ws):
    full = shifted_window_mask(h, w, ws, ws // 2, dtype=torch.float64)
    kinds = shifted_window_masks(ws, ws // 2).double()
    nh, nw = h // ws, w // ws
    for i in range(nh):
        for j in range(nw):
            kind = 2 * (i == nh - 1) + (j == nw - 1)
            expected = torch.zeros_like(full[0]) if kind == 0 else kinds[kind - 1]
            assert torch.equal(full[i * nw + j], expected), (i, j)


def test_fused_path_pads_heads_to_a_multiple_of_eight():
    assert [kernel_head_dim(d, True) for d in (6, 8, 24, 30)] == [8, 8, 24, 32]
    assert [kernel_head_dim(d, False) for d in (6, 30)] == [6, 30]


def synth_model(config, dtype=torch.float32):
    model = HAT(**config)
    model.load_state_dict(load_synth_weights().synth_state_dict(model.state_dict(), 7))
    return model.to(dtype)


@pytest.mark.parametrize('size', [(8, 8), (8, 24), (24, 8), (21, 30)])
def test_fused_matches_float64_within_1e5_relative_for_padded_heads(size):
    model = synth_model(ODD_HEADS_CONFIG).eval()
    reference = synth_model(ODD_HEADS_CONFIG, torch.float64).eval()
    reference.set_fused_attention(False)
    photo = to_tensor(sample_photo('coffee')[100:100 + size[0], 150:150 + size[1]])
    x = torch.cat([photo, photo.flip(-1)])
    with torch.no_grad():
        expected = reference(x.double())
        for fused in (True, False):
            model.set_fused_attention(fused)
            error = (model(x).double() - expected).abs().max() / expected.abs().max()
            assert error < 1e-5, (fused, error.item())


def test_fused_and_explicit_gradients_agree_in_float64():
    grads = {}
    x = to_tensor(sample_photo('astronaut')[64:88, 32:48]).double()
    for fused in (True, False):
        model = synth_model(ODD_HEADS_CONFIG, torch.float64).train()
        model.set_fused_attention(fused)
        model(x).square().mean().backward()
        grads[fused] = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads[True].values())
    for name, grad in grads[True].items():
        assert torch.allclose(grad, grads[False][name], rtol=1e-9, atol=1e-12), name
    assert grads[True]['layers.0.residual_group.blocks.1.attn.relative_position_bias_table'].abs().sum() > 0


def test_convs_run_channels_last_and_output_is_contiguous():
    model = HAT(**TINY_CONFIG).eval()
    assert model.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.state_dict()['conv_first.weight'].shape == (24, 3, 3, 3)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 11, 16))
    assert out.is_contiguous() and out.shape == (1, 3, 22, 32)


def test_float32_inference_takes_the_fused_cpu_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = HAT(**ODD_HEADS_CONFIG).eval()
    x = torch.rand(2, 3, 24, 40)
    with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # no fallback to the math path
        assert model(x).shape == (2, 3, 72, 120)


@pytest.mark.parametrize('how', ['bf16 weights', 'autocast', 'autocast banded'])
def test_bfloat16_cpu_inference_takes_the_bf16_gemm_path(monkeypatch, how):
    """Every attention call of bf16 inference (bf16 weights, or float32 weights under autocast as
    hat-upscale runs it) goes through kernels.attend_bf16_cpu, never through the SDPA kernel."""
    calls = []
    gemms = kernels.attend_bf16_cpu

    def counting(q, *args):
        calls.append(q.dtype)
        return gemms(q, *args)

    def refuse(*args, **kwargs):
        raise AssertionError('bf16 inference on CPU called scaled_dot_product_attention')

    monkeypatch.setattr(kernels, 'attend_bf16_cpu', counting)
    monkeypatch.setattr(torch.nn.functional, 'scaled_dot_product_attention', refuse)
    model = HAT(**ODD_HEADS_CONFIG).eval()
    x = torch.rand(1, 3, 24, 40)
    if how == 'bf16 weights':
        model, x = model.bfloat16(), x.bfloat16()
    if how.endswith('banded'):
        model.set_banded(1)
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16, enabled=how != 'bf16 weights'):
        model(x)
    # Per group: a regular and a shifted HAB (up to 4 mask kinds: 3 x 5 windows here) and one OCAB.
    per_forward = 2 * (1 + 4 + 1) if how != 'autocast banded' else 2 * (3 * (1 + 2) + 3)
    assert calls == [torch.bfloat16] * per_forward


def test_bfloat16_cpu_inference_attends_with_bf16_gemms_not_the_flash_kernel(monkeypatch):
    """The CPU flash kernel runs bf16 no faster than fp32; bf16 inference takes batched bf16 GEMMs
    instead, as accurate against float32 as the kernel was."""
    model = synth_model(ODD_HEADS_CONFIG).eval()
    x = to_tensor(sample_photo('coffee')[100:124, 150:190])
    with torch.no_grad():
        expected = model(x)
    model.to(torch.bfloat16)
    flash = model(x.bfloat16()).detach().float()  # with autograd: the flash kernel, as training runs it

    def refuse(*args, **kwargs):
        raise AssertionError('bf16 inference on CPU called scaled_dot_product_attention')

    monkeypatch.setattr(torch.nn.functional, 'scaled_dot_product_attention', refuse)
    with torch.no_grad():
        gemms = model(x.bfloat16()).float()
    assert (gemms - expected).abs().max() <= 1.5 * (flash - expected).abs().max() + 1e-3
