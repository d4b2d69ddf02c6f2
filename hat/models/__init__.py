"""HAT's BasicSR models: importing this package registers them in ``MODEL_REGISTRY``."""
from hat.models.hat_model import HATModel

__all__ = ['HATModel']
