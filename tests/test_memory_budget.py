"""The memory model of hat.inference.plan against the memory a forward really allocates."""
import pytest
import torch

from hat import HAT
from hat.inference.plan import TilePlan
from tests.conftest import TINY_CONFIG

#: Wide enough for several bands of window rows at ``band_tokens=1024``; x4 so the head matters.
CONFIG = dict(TINY_CONFIG, embed_dim=48, num_heads=[3, 3], squeeze_factor=12, upscale=4, drop_path_rate=0.0)


def allocated_peak(fn) -> int:
    """Peak bytes of tensors allocated (and not yet freed) during ``fn()``, from the profiler's memory events."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize('band_tokens,fused,size', [(1024, True, (96, 64)), (None, True, (48, 40)),
                                                   (1024, False, (40, 32))], ids=['bands', 'whole', 'explicit'])
def test_model_is_within_20_percent_of_the_measured_peak(band_tokens, fused, size):
    torch.manual_seed(0)
    model = HAT(**CONFIG).eval()
    model.set_banded(band_tokens)
    model.set_fused_attention(fused)
    x = torch.rand(1, 3, *size)
    with torch.inference_mode():
        model(x[..., :16, :16])  # warm-up
        measured = allocated_peak(lambda: model(x))
    predicted = TilePlan(model, x.device).tile_bytes(*size)
    assert 0.8 <= predicted / measured <= 1.2, (predicted / 2 ** 20, measured / 2 ** 20)


def test_bands_bound_the_peak_by_a_few_body_maps():
    """Banded inference needs about three body maps plus one band's temporaries, far below the
    whole-image peak (x1: the reconstruction head is small)."""
    torch.manual_seed(0)
    model = HAT(**dict(CONFIG, upscale=1)).eval()
    x = torch.rand(1, 3, 128, 64)
    peaks = {}
    for band_tokens in (1024, None):
        model.set_banded(band_tokens)
        with torch.inference_mode():
            peaks[band_tokens] = allocated_peak(lambda: model(x))
    body_map = 128 * 64 * CONFIG['embed_dim'] * 4
    assert peaks[1024] < 0.5 * peaks[None]
    assert peaks[1024] < 5 * body_map
