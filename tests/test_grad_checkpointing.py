"""use_checkpoint=True recomputes blocks in backward: same outputs and gradients."""
import torch

from hat import HAT
from tests.conftest import TINY_CONFIG


def run(model, x):
    model.zero_grad()
    out = model(x)
    (out.square().mean()).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointing_keeps_outputs_and_gradients():
    torch.manual_seed(0)
    plain = HAT(**TINY_CONFIG, drop_path_rate=0.0).double().train()
    checkpointed = HAT(**TINY_CONFIG, drop_path_rate=0.0, use_checkpoint=True).double().train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    out_a, grads_a = run(plain, x)
    out_b, grads_b = run(checkpointed, x)
    assert torch.allclose(out_a, out_b, atol=1e-12)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(plain.parameters()))
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], atol=1e-12), name


def test_checkpointing_can_be_switched_at_run_time():
    model = HAT(**TINY_CONFIG)
    model.set_grad_checkpointing(True)
    assert all(layer.residual_group.use_checkpoint for layer in model.layers)
    model.set_grad_checkpointing(False)
    assert not any(layer.residual_group.use_checkpoint for layer in model.layers)
