"""CUDA: the fused path takes the memory-efficient/cuDNN/flash kernels (never the math fallback)
and the forward makes no host-device synchronisation. Skipped without a GPU."""
import pytest
import torch

from hat import HAT
from hat.archs.hat_presets import create_hat

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
]


def fast_kernels():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION])


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_forward_uses_fast_kernels_without_syncs(dtype):
    model = create_hat('HAT', upscale=4).cuda().eval().to(dtype)  # head_dim 30: padded to 32
    x = torch.rand(1, 3, 64, 48, device='cuda', dtype=dtype)
    with torch.no_grad(), fast_kernels():
        model(x)  # fills the mask cache
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            out = model(x)
        finally:
            torch.cuda.set_sync_debug_mode('default')
    assert out.shape == (1, 3, 256, 192) and torch.isfinite(out).all()


def test_bf16_autocast_training_uses_fast_kernels():
    model = HAT(embed_dim=60, depths=[2, 2], num_heads=[2, 2], window_size=16, upscale=2).cuda().train()
    x = torch.rand(2, 3, 48, 48, device='cuda')
    with fast_kernels(), torch.autocast('cuda', dtype=torch.bfloat16):
        loss = model(x).float().abs().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
