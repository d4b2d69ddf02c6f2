"""Test-only: ``RankFaultModel``, a HATModel that raises on one rank at start-up or at a validation.

``HAT_TEST_FAULT=<rank>:<startup|validation>`` in the environment says where; the ranks-fail-together
tests start training processes that import it after ``hat``, before ``hat.train``.
"""
from __future__ import annotations

import os

from basicsr.utils.registry import MODEL_REGISTRY

from hat.models.hat_model import HATModel


def _fault_here(moment: str) -> bool:
    rank, _, when = os.environ.get('HAT_TEST_FAULT', '').partition(':')
    return when == moment and rank == os.environ.get('RANK')


@MODEL_REGISTRY.register()
class RankFaultModel(HATModel):
    """HATModel failing where ``HAT_TEST_FAULT`` says."""

    def __init__(self, opt: dict) -> None:
        if _fault_here('startup'):
            raise RuntimeError(f'injected failure at start-up on rank {os.environ["RANK"]}')
        super().__init__(opt)

    def validation(self, *args, **kwargs) -> None:
        if _fault_here('validation'):
            raise RuntimeError(f'injected failure at a validation on rank {os.environ["RANK"]}')
        super().validation(*args, **kwargs)
