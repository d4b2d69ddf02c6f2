"""HAT (Hybrid Attention Transformer) for image super-resolution, as a BasicSR plugin.

``import hat`` makes basicsr 1.4.2 importable on today's torchvision (see
``hat.basicsr_compat``) and registers HAT's architecture, datasets and models in BasicSR's
registries.
"""
from hat import basicsr_compat

basicsr_compat.apply()

from hat import data, models  # noqa: E402,F401
from hat.archs import HAT  # noqa: E402
from hat.archs.hat_presets import PRESETS, create_hat  # noqa: E402
from hat.checkpoint import CheckpointError, load_hat, read_state_dict  # noqa: E402
from hat.upscaler import Upscaler  # noqa: E402
from hat.version import __version__  # noqa: E402

__all__ = ['HAT', 'PRESETS', 'CheckpointError', 'create_hat', 'load_hat', 'read_state_dict', 'Upscaler', '__version__']
