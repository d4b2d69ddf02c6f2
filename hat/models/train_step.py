"""The training step of HAT's models with the switches of ``hat.models.train_switches``.

AMP: the networks keep float32 weights and run their forward under ``torch.autocast`` (the
architecture keeps the residual stream and LayerNorms in float32 itself); the losses are computed in
float32; for float16 a ``GradScaler`` scales the loss and skips steps whose gradients overflowed (it
starts afresh when a run resumes). Accumulation: micro-batches run forward and backward one after the
other; under DDP all but the last run in ``no_sync``, so gradients are all-reduced once per step.
Clipping: the global L2 norm of the (unscaled) gradients is clipped and logged before clipping.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from typing import Iterator, Optional

import torch
from basicsr.utils import get_root_logger
from torch.nn.parallel import DistributedDataParallel

from hat.models.train_switches import TrainSwitches


class TrainStepMixin:
    """SRModel's training step (pixel and perceptual losses) with the switches; list it before SRModel in the bases."""

    def init_training_settings(self) -> None:
        self.setup_train_switches()
        super().init_training_settings()

    def setup_train_switches(self) -> None:
        """Read the switches (failing on bad values before anything is built) and make the GradScaler."""
        self.switches = TrainSwitches.from_options(self.opt)
        self.use_amp, self.amp_dtype = self.switches.use_amp, self.switches.amp_dtype
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.switches.scales_loss)
        logger = get_root_logger()
        if self.use_amp:
            logger.info(f'Mixed-precision training: autocast to {self.amp_dtype}'
                        f'{" with loss scaling" if self.grad_scaler.is_enabled() else ""}.')
        if self.switches.accum_iter > 1:
            logger.info(f'Gradient accumulation: {self.switches.accum_iter} micro-batches per optimizer step.')
        if self.switches.grad_clip is not None:
            logger.info(f'Gradient clipping at global norm {self.switches.grad_clip:g} (grad_norm: before clipping).')
        if self.switches.ema_power is not None:
            logger.info(f'EMA warm-up: decay min(ema_decay, 1 - (1 + step) ** -{self.switches.ema_power:g}).')

    def autocast(self):
        """Autocast to ``amp_dtype`` when AMP is on (a no-op context otherwise)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    @contextmanager
    def gradient_sync(self, last: bool, *nets: torch.nn.Module) -> Iterator[None]:
        """All-reduce the gradients of DDP ``nets`` only in the backward of the ``last`` micro-batch."""
        with ExitStack() as stack:
            if not last:
                for net in nets:
                    if isinstance(net, DistributedDataParallel):
                        stack.enter_context(net.no_sync())
            yield

    def step_optimizer(self, optimizer: torch.optim.Optimizer, net: torch.nn.Module) -> Optional[torch.Tensor]:
        """Clip (if ``grad_clip``) and step through the scaler; returns the norm before clipping, if clipped."""
        norm = None
        if self.switches.grad_clip is not None:
            self.grad_scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), self.switches.grad_clip).detach()
        self.grad_scaler.step(optimizer)
        return norm

    def update_ema(self, current_iter: int) -> None:
        """One EMA step (the step's decay, warmed up if ``ema_power`` is set)."""
        if self.ema_decay > 0:
            self.model_ema(decay=self.switches.ema_decay_at(self.ema_decay, current_iter))

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad(set_to_none=True)
        parts = list(self.switches.micro_batches(self.lq, self.gt))
        losses: OrderedDict[str, torch.Tensor] = OrderedDict()
        outputs = []
        for index, (weight, (lq, gt)) in enumerate(parts):
            with self.gradient_sync(index == len(parts) - 1, self.net_g):
                with self.autocast():
                    output = self.net_g(lq)
                output = output.float()
                part = self.reconstruction_losses(output, gt)
                self.grad_scaler.scale(sum(part.values()) * weight).backward()
            add_weighted(losses, part, weight)
            outputs.append(output.detach())
        self.output = torch.cat(outputs)
        norm = self.step_optimizer(self.optimizer_g, self.net_g)
        self.grad_scaler.update()
        if norm is not None:
            losses['grad_norm'] = norm
        self.log_dict = self.reduce_loss_dict(losses)
        self.update_ema(current_iter)

    def reconstruction_losses(self, output: torch.Tensor, gt: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """SRModel's losses: ``l_pix`` and, if configured, ``l_percep`` / ``l_style``."""
        losses = OrderedDict()
        if self.cri_pix:
            losses['l_pix'] = self.cri_pix(output, gt)
        if self.cri_perceptual:
            for name, value in zip(('l_percep', 'l_style'), self.cri_perceptual(output, gt)):
                if value is not None:
                    losses[name] = value
        return losses


def add_weighted(total: dict[str, torch.Tensor], part: dict[str, torch.Tensor], weight: float) -> None:
    """Accumulate one micro-batch's detached losses, weighted by its share of the batch, into ``total``."""
    for name, value in part.items():
        value = value.detach() * weight
        total[name] = total[name] + value if name in total else value
