"""HAT (Hybrid Attention Transformer) for image super-resolution, as a BasicSR plugin.

``import hat`` only adds: it registers HAT's architecture, datasets and models in BasicSR's
registries and, where torchvision lacks it, the ``torchvision.transforms.functional_tensor``
module basicsr 1.4.2 imports. It changes none of basicsr's functions; ``hat/train.py`` and
``hat/test.py`` apply their workarounds for their own run (``hat.training.basicsr_compat.patch_basicsr``
does the same for other scripts).
"""
from hat import legacy_paths
from hat.training import basicsr_compat

legacy_paths.install()

basicsr_compat.install_functional_tensor_shim()

from hat import data, models  # noqa: E402,F401
from hat.archs import HAT  # noqa: E402
from hat.archs.hat_presets import PRESETS, create_hat  # noqa: E402
from hat.inference.upscaler import Upscaler  # noqa: E402
from hat.version import __version__  # noqa: E402
from hat.weights.checkpoint import CheckpointError, load_hat, read_state_dict, save_weights  # noqa: E402

__all__ = ['HAT', 'PRESETS', 'CheckpointError', 'create_hat', 'load_hat', 'read_state_dict', 'save_weights',
           'Upscaler', '__version__']
