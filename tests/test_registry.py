"""`import hat` makes basicsr importable on today's torchvision and registers HAT, and changes nothing else."""
import os
import subprocess
import sys

import torch
import yaml

from tests.conftest import REPO_ROOT


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh interpreter that imports this clone's ``hat``, started in ``cwd``."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO_ROOT), os.environ.get('PYTHONPATH', '')]),
           'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_import_hat_then_basicsr_in_a_fresh_interpreter(tmp_path):
    code = (
        'import hat, basicsr\n'
        'from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY\n'
        'print(ARCH_REGISTRY.get("HAT").__module__, MODEL_REGISTRY.get("HATModel").__name__)\n'
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['hat.archs.hat_arch', 'HATModel']


#: Prints, for each function hat/train.py replaces during a run, whether basicsr's module holds its own.
ORIGINALS = """
import sys
argv = list(sys.argv)
import hat, hat.train, hat.test  # basicsr itself cannot be imported first on today's torchvision
import basicsr.test, basicsr.train, basicsr.utils.options
from basicsr.utils.options import parse_options
def own():
    return [basicsr.utils.options.parse_options is parse_options, basicsr.train.parse_options is parse_options,
            basicsr.test.parse_options is parse_options, basicsr.train.load_resume_state.__module__ == 'basicsr.train',
            basicsr.train.get_root_logger.__module__ == 'basicsr.utils.logger', sys.argv == argv]
"""


def test_import_hat_leaves_basicsr_functions_alone(tmp_path):
    result = run_python(ORIGINALS + 'print(own())\n', tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([True] * 6)


def test_patch_basicsr_installs_the_workarounds_and_restores_them(tmp_path):
    code = ORIGINALS + (
        'from hat.training.basicsr_compat import patch_basicsr\n'
        'from hat.training.resume import load_resume_state\n'
        'with patch_basicsr():\n'
        '    inside = own()\n'
        '    ours = basicsr.train.load_resume_state.func is load_resume_state\n'
        'print(inside, ours, own())\n'
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f'{[False] * 5 + [True]} True {[True] * 6}'


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
