"""The training switches of HAT's models, read and checked from the options' ``train`` section::

    train:
      accum_iter: 1      # forward/backward passes per optimizer step (gradient accumulation)
      grad_clip: ~       # clip the global L2 gradient norm to this value; the pre-clip norm is logged
      ema_power: ~       # EMA warm-up: decay at step t is min(ema_decay, 1 - (1 + t) ** -ema_power)
      use_amp: false     # mixed precision: autocast forward, float32 weights and losses
      amp_dtype: bf16    # bf16 or fp16 (fp16 also scales the loss with a GradScaler)

One iteration of ``hat/train.py`` is one optimizer step: ``accum_iter: N`` splits each loaded batch
into N micro-batches whose weighted gradients add up to the whole batch's (docs/training.md).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from hat.inference.precision import parse_precision
from hat.problems import Problem, ProblemsError


@dataclass(frozen=True)
class TrainSwitches:
    """AMP, gradient accumulation, gradient clipping and EMA warm-up of one training run."""

    use_amp: bool = False
    amp_dtype: torch.dtype = torch.bfloat16
    accum_iter: int = 1
    grad_clip: Optional[float] = None
    ema_power: Optional[float] = None

    @classmethod
    def from_options(cls, opt: dict) -> TrainSwitches:
        """The switches of a parsed option file; :class:`ProblemsError` lists every value that is not accepted."""
        train_opt, problems = opt.get('train') or {}, []

        def refuse(text: str) -> None:
            problems.append(Problem('train', text))

        def positive(key: str) -> Optional[float]:
            value = train_opt.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
                return refuse(f'{key} must be a positive number (or left out to switch it off), got {value!r}')
            return float(value)

        use_amp = train_opt.get('use_amp', False)
        if not isinstance(use_amp, bool):
            refuse(f'use_amp must be true or false, got {use_amp!r}')
        try:
            amp_dtype: Optional[torch.dtype] = parse_precision(train_opt.get('amp_dtype', 'bf16'))
        except ValueError:
            amp_dtype = None
        if amp_dtype not in (torch.bfloat16, torch.float16):  # autocast takes only these
            refuse(f'amp_dtype {train_opt["amp_dtype"]!r} is not supported: use bf16 or fp16')
        accum_iter = train_opt.get('accum_iter', 1)
        train_set = opt['datasets'].get('train') if isinstance(opt.get('datasets'), dict) else None
        batch = train_set.get('batch_size_per_gpu') if isinstance(train_set, dict) else None
        if isinstance(accum_iter, bool) or not isinstance(accum_iter, int) or accum_iter < 1:
            refuse(f'accum_iter must be a whole number >= 1 (1: no accumulation), got {accum_iter!r}')
        elif isinstance(batch, int) and accum_iter > batch:
            refuse(f'accum_iter {accum_iter} splits each batch into {accum_iter} micro-batches, more than '
                   f'batch_size_per_gpu {batch} has images; batch_size_per_gpu is the batch of one optimizer step: '
                   'raise it or lower accum_iter')
        ema_power, grad_clip = positive('ema_power'), positive('grad_clip')
        ema_decay = train_opt.get('ema_decay', 0)
        if ema_power is not None and not (isinstance(ema_decay, numbers.Real) and ema_decay > 0):
            refuse('ema_power warms up the EMA, but ema_decay is 0 (no EMA): set ema_decay or remove ema_power')
        if problems:
            raise ProblemsError(problems)
        return cls(use_amp, amp_dtype, accum_iter, grad_clip, ema_power)

    @property
    def scales_loss(self) -> bool:
        """Whether gradients pass through a GradScaler (float16 autocast, whose gradients can underflow)."""
        return self.use_amp and self.amp_dtype == torch.float16

    def ema_decay_at(self, ema_decay: float, step: int) -> float:
        """The EMA decay for optimizer step ``step``: ``ema_decay``, or lower early on when ``ema_power`` p is set
        (0 at step 0, where the EMA tracks the network; ``ema_decay`` after ``(1 - ema_decay) ** (-1 / p)`` steps)."""
        if self.ema_power is None:
            return ema_decay
        return min(ema_decay, 1.0 - (1.0 + step) ** -self.ema_power)

    def micro_batches(self, *tensors: torch.Tensor) -> Iterator[tuple[float, tuple[torch.Tensor, ...]]]:
        """``(weight, chunks)`` for each of the ``accum_iter`` micro-batches; weights: shares of the batch (sum 1)."""
        size = tensors[0].shape[0]
        for chunks in zip(*(torch.tensor_split(t, self.accum_iter) for t in tensors)):
            if chunks[0].shape[0]:
                yield chunks[0].shape[0] / size, chunks

