"""The flat module names of hat 0.1 (``hat.checkpoint``, ``hat.basicsr_compat``, ...) as aliases of their new homes.

Modules now live in wings (``hat.inference``, ``hat.training``, ``hat.weights``); scripts written
against the old names, ``import hat.checkpoint`` and ``python -m hat.convert`` alike, keep working and
get the very same module object, so classes and module state are not duplicated.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import CodeType, ModuleType
from typing import Optional, Sequence

#: Old flat name -> new home, for every module moved out of ``hat/`` itself.
MOVED = {
    'hat.atomic_io': 'hat.weights.atomic_io',
    'hat.available_memory': 'hat.inference.available_memory',
    'hat.basicsr_compat': 'hat.training.basicsr_compat',
    'hat.checkpoint': 'hat.weights.checkpoint',
    'hat.convert': 'hat.weights.convert',
    'hat.experiment_lock': 'hat.training.experiment_lock',
    'hat.export': 'hat.weights.export',
    'hat.image_io': 'hat.inference.image_io',
    'hat.memory_budget': 'hat.inference.plan',
    'hat.precision': 'hat.inference.precision',
    'hat.preflight': 'hat.training.preflight',
    'hat.tiling': 'hat.inference.plan',
    'hat.upscale_cli': 'hat.inference.upscale_cli',
    'hat.upscaler': 'hat.inference.upscaler',
}


class _AliasLoader(importlib.abc.Loader):
    """Loads an old name as the already-imported module of its new home (``python -m`` gets its code)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the new home ran when imported); undo the import system's ``__spec__`` stamp."""
        module.__spec__ = self.target_spec

    def get_code(self, fullname: str) -> Optional[CodeType]:
        spec = importlib.util.find_spec(self.target)
        return spec.loader.get_code(self.target)


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Answers the old names in ``MOVED`` and nothing else."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Make the old names importable (idempotent)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
