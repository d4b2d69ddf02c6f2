"""Workarounds for basicsr 1.4.2 on today's PyTorch stack, applied from our side.

basicsr 1.4.2 (the last PyPI release) predates several torch/torchvision changes. Rather
than editing site-packages or vendoring BasicSR, this module patches the few places that
break, and nothing else. It must run before ``basicsr`` is first imported, which
``import hat`` guarantees (``hat/__init__.py`` imports it first).

Patches:
- ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17, but
  ``basicsr/data/degradations.py`` imports ``rgb_to_grayscale`` from it. We register a
  module of that name that re-exports the public function.
"""
import sys
import types


def install_functional_tensor_shim() -> None:
    """Register ``torchvision.transforms.functional_tensor`` if torchvision no longer has it."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    shim = types.ModuleType(name)
    shim.__doc__ = 'Stand-in registered by hat.basicsr_compat for basicsr 1.4.2.'
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = shim


def apply() -> None:
    """Apply every workaround; safe to call more than once."""
    install_functional_tensor_shim()
