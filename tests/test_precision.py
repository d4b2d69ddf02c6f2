"""hat.inference.precision (names -> dtypes, native bf16) and ``precision='auto'``, the default of hat.Upscaler
and hat-upscale: bf16 where the device computes it natively, fp32 elsewhere, within 45 dB of fp32."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, load_synth_weights, sample_photo

from hat.archs.hat_arch import HAT
from hat.inference.precision import (
    auto_precision,
    cpu_has_native_bf16,
    has_native_bf16,
    parse_precision,
    precision_name,
)
from hat.inference.upscale_cli import build_parser
from hat.inference.upscaler import Upscaler

#: Photo crops (scikit-image's bundled samples) the accuracy bound is checked on.
PHOTOS = [('astronaut', 100, 180), ('coffee', 100, 200), ('chelsea', 50, 150), ('rocket', 100, 200)]

CPUINFO = '''processor\t: 0
vendor_id\t: {vendor}
model name\t: {model}
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 avx2 avx512f avx512bw {extra}
bugs\t\t: spectre_v1

'''


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.torch_threads


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize('value,name,dtype', [
    ('fp32', 'fp32', torch.float32), ('float32', 'fp32', torch.float32), (torch.float32, 'fp32', torch.float32),
    ('bf16', 'bf16', torch.bfloat16), ('BFloat16', 'bf16', torch.bfloat16), (torch.bfloat16, 'bf16', torch.bfloat16),
    ('fp16', 'fp16', torch.float16), ('half', 'fp16', torch.float16), (torch.half, 'fp16', torch.float16),
])
def test_names_aliases_and_dtypes(value, name, dtype):
    assert precision_name(value) == name and parse_precision(value) is dtype


def test_unknown_precision_names_what_is_accepted():
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'; use one of fp32, bf16, fp16 \(or float32"):
        parse_precision('fp8')
    with pytest.raises(ValueError, match='unsupported dtype torch.float64'):
        precision_name(torch.float64)


@pytest.mark.parametrize('extra,native', [
    ('avx512_bf16 avx512_vnni', True),  # AMD Zen 4, Intel Cooper Lake
    ('amx_bf16 amx_tile amx_int8 avx512_bf16', True),  # Intel Sapphire Rapids
    ('avx512_vnni', False),  # AVX-512 without bf16 (Skylake-SP, Ice Lake)
    ('', False),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, extra, native):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(CPUINFO.format(vendor='AuthenticAMD', model='AMD EPYC', extra=extra) * 2)
    assert cpu_has_native_bf16(cpuinfo) is native
    assert cpu_has_native_bf16(tmp_path / 'missing') is False


def test_auto_picks_bf16_exactly_where_this_cpu_has_it():
    native = cpu_has_native_bf16()
    assert has_native_bf16('cpu') is native and auto_precision('cpu') == ('bf16' if native else 'fp32')
    upscaler = Upscaler(HAT(**TINY_CONFIG).eval())
    assert upscaler.precision == ('bf16' if native else 'fp32')
    assert upscaler.dtype is parse_precision(upscaler.precision)
    assert upscaler.precision_reason == ('auto: this CPU computes bf16 natively' if native
                                         else 'auto: this CPU has no native bf16')
    assert Upscaler(HAT(**TINY_CONFIG).eval(), precision='fp32').precision_reason == 'as requested'
    assert build_parser().parse_args(['-i', 'a.png', '-o', 'out', '-m', 'w.pth']).precision == 'auto'


@pytest.mark.parametrize('config,seed', [
    (TINY_CONFIG, 0),
    ({**TINY_CONFIG, 'embed_dim': 48, 'num_heads': [6, 6], 'window_size': 16, 'upscale': 4}, 1),
])
def test_bf16_stays_within_45_db_of_fp32_on_photos(config, seed):
    model = HAT(**config).eval()
    model.load_state_dict(load_synth_weights().synth_state_dict(model.state_dict(), seed))
    fp32 = Upscaler(model, precision='fp32')
    default = Upscaler(model)  # auto: bf16 on this project's machines
    bf16 = default if default.precision == 'bf16' else Upscaler(model, precision='bf16')
    for name, y, x in PHOTOS:
        photo = sample_photo(name)[y:y + 64, x:x + 64]
        assert psnr(bf16.upscale(photo), fp32.upscale(photo)) >= 45, name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_auto_on_cuda_follows_the_gpu():
    upscaler = Upscaler(HAT(**TINY_CONFIG).eval(), device='cuda')
    assert upscaler.precision == ('bf16' if torch.cuda.is_bf16_supported(including_emulation=False) else 'fp32')
    assert upscaler.precision_reason.startswith(f'auto: {torch.cuda.get_device_name()}')
