"""Mixed-precision training for HATModel, switched on in the options' ``train`` section::

    train:
      use_amp: true      # default false
      amp_dtype: bf16    # bf16 (default) or fp16; fp16 also scales the loss (GradScaler)

The network keeps float32 weights; its forward runs under ``torch.autocast`` (the
architecture keeps the residual stream and LayerNorms in float32 itself), the losses are
computed in float32, and for float16 the gradients pass through a ``GradScaler`` that skips
steps whose gradients overflowed. The scaler starts afresh when a run resumes.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from basicsr.utils import get_root_logger

AMP_DTYPES = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16, 'fp16': torch.float16, 'float16': torch.float16}


def amp_settings(train_opt: dict) -> tuple[bool, torch.dtype]:
    """``(use_amp, amp_dtype)`` from the ``train`` options, with clear errors for bad values."""
    use_amp = train_opt.get('use_amp', False)
    if not isinstance(use_amp, bool):
        raise ValueError(f'train: use_amp must be true or false, got {use_amp!r}')
    name = str(train_opt.get('amp_dtype', 'bf16')).lower()
    if name not in AMP_DTYPES:
        raise ValueError(f'train: amp_dtype {name!r} is not supported: use bf16 or fp16')
    return use_amp, AMP_DTYPES[name]


class AmpTrainingMixin:
    """Adds ``use_amp``/``amp_dtype`` to an SRModel subclass (list it before SRModel in the bases)."""

    def init_training_settings(self) -> None:
        super().init_training_settings()
        self.use_amp, self.amp_dtype = amp_settings(self.opt['train'])
        self.grad_scaler = torch.amp.GradScaler(self.device.type,
                                                enabled=self.use_amp and self.amp_dtype == torch.float16)
        if self.use_amp:
            get_root_logger().info(f'Mixed-precision training: autocast to {self.amp_dtype}'
                                   f'{" with loss scaling" if self.grad_scaler.is_enabled() else ""}.')

    def optimize_parameters(self, current_iter: int) -> None:
        if not self.use_amp:
            return super().optimize_parameters(current_iter)
        self.optimizer_g.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            self.output = self.net_g(self.lq)
        output = self.output.float()
        losses = OrderedDict()
        if self.cri_pix:
            losses['l_pix'] = self.cri_pix(output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    losses[name] = value
        self.grad_scaler.scale(sum(losses.values())).backward()
        self.grad_scaler.step(self.optimizer_g)
        self.grad_scaler.update()
        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
