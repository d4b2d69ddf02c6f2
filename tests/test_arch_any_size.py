"""HAT.forward takes any input size: reflect padding to the window multiple, output cropped."""
import pytest
import torch
import torch.nn.functional as F

from hat import HAT
from hat.archs.hat_arch import pad_to_multiple
from tests.conftest import TINY_CONFIG, sample_photo, to_tensor


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return HAT(**TINY_CONFIG).eval()


@pytest.mark.parametrize('size', [(1, 1), (1, 9), (7, 1), (5, 13), (8, 8), (17, 30), (40, 16)])
def test_any_size_gives_scaled_output(tiny, size):
    with torch.no_grad():
        out = tiny(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, size[0] * 2, size[1] * 2)
    assert torch.isfinite(out).all()


def test_padding_follows_original_test_recipe(tiny):
    x = to_tensor(sample_photo('astronaut')[200:237, 180:203])  # 37 x 23, window 8
    with torch.no_grad():
        ours = tiny(x)
        padded = F.pad(x, (0, 1, 0, 3), mode='reflect')  # the original model's pre_process
        theirs = tiny(padded)[..., :74, :46]
    assert torch.equal(ours, theirs)


def test_inputs_that_fit_take_no_padding():
    x = torch.rand(1, 3, 16, 24)
    assert pad_to_multiple(x, 8) is x


@pytest.mark.parametrize('h,w', [(3, 2), (1, 5), (2, 1), (9, 10)])
def test_large_pads_stay_reflections(h, w):
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    padded = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (16, 16)
    assert torch.equal(padded[..., :h, :w], x)
    values = set(x.flatten().tolist())
    assert set(padded.flatten().tolist()) <= values
    if h > 1 and w > 1:
        assert torch.equal(padded[..., h, :w], x[..., h - 2, :])  # first padded row mirrors row h-2


def test_batch_items_are_independent(tiny):
    a, b = torch.rand(1, 3, 20, 12), torch.rand(1, 3, 20, 12)
    with torch.no_grad():
        both = tiny(torch.cat([a, b]))
        assert torch.allclose(both[1:], tiny(b), atol=1e-6)


def module_state(model):
    """Every module's attributes, by identity, with the contents of its plain containers."""
    return [{k: (id(v), repr(v) if isinstance(v, (dict, list, set)) else None) for k, v in vars(m).items()}
            for m in model.modules()]


def test_forward_changes_no_module_state(tiny):
    before = module_state(tiny)
    with torch.no_grad():
        for size in [(16, 16), (24, 16), (9, 40)]:
            tiny(torch.rand(1, 3, *size))
    assert module_state(tiny) == before
    assert tiny.shift_masks.dtype == torch.float32
    tiny.double()
    assert tiny.shift_masks.dtype == torch.float64  # a buffer: follows the model's dtype and device
    tiny.float()


def test_one_model_serves_several_threads(tiny):
    """Threads running one model on different sizes at once get what each size gives alone."""
    import threading

    sizes = [(8 + 3 * i, 30 - 2 * i) for i in range(10)]
    inputs = [torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(i)) for i, size in enumerate(sizes)]
    with torch.no_grad():
        expected = [tiny(x) for x in inputs]
    failures = []

    def serve(offset):
        with torch.no_grad():
            for i in range(len(inputs)):
                j = (i + offset) % len(inputs)
                if not torch.equal(tiny(inputs[j]), expected[j]):
                    failures.append(sizes[j])

    threads = [threading.Thread(target=serve, args=(k * 3,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_conv_branch_switched_off_gives_attention_only_output():
    torch.manual_seed(0)
    off = HAT(**{**TINY_CONFIG, 'conv_scale': 0.0}).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        out = off(x)
        for layer in off.layers:
            for block in layer.residual_group.blocks:
                block.conv_block.cab[0].weight.add_(1.0)  # the conv branch must not matter at all
        assert torch.isfinite(out).all()
        assert torch.equal(off(x), out)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16, torch.bfloat16])
def test_input_of_another_dtype_is_computed_in_the_weights_dtype(tiny, dtype):
    x = to_tensor(sample_photo('coffee')[100:124, 200:216])
    with torch.no_grad():
        expected = tiny(x)
        out = tiny(x.to(dtype))
    assert out.dtype == dtype
    assert (out.double() - expected.double()).abs().max() < {torch.float64: 1e-6}.get(dtype, 2e-2)
