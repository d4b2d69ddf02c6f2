"""HAT's BasicSR models: importing this package registers them in ``MODEL_REGISTRY``."""
from hat.models.hat_model import HATModel
from hat.models.realhat_model import RealHATGANModel, RealHATMSEModel

__all__ = ['HATModel', 'RealHATGANModel', 'RealHATMSEModel']
