"""`import hat` makes basicsr importable on today's torchvision and registers HAT."""
import subprocess
import sys

import torch
import yaml

from tests.conftest import REPO_ROOT


def test_import_hat_then_basicsr_in_a_fresh_interpreter():
    code = (
        'import hat, basicsr\n'
        'from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY\n'
        'print(ARCH_REGISTRY.get("HAT").__module__, MODEL_REGISTRY.get("HATModel").__name__)\n'
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO_ROOT.parent,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['hat.archs.hat_arch', 'HATModel']


def test_network_g_section_of_a_published_option_file_builds_hat():
    from basicsr.archs import build_network

    network_g = yaml.safe_load("""
        type: HAT
        upscale: 2
        in_chans: 3
        img_size: 64
        window_size: 16
        compress_ratio: 3
        squeeze_factor: 30
        conv_scale: 0.01
        overlap_ratio: 0.5
        img_range: 1.
        depths: [6]
        embed_dim: 180
        num_heads: [6]
        mlp_ratio: 2
        upsampler: 'pixelshuffle'
        resi_connection: '1conv'
    """)
    net = build_network(network_g).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 20, 12)).shape == (1, 3, 40, 24)
