"""HAT architecture: importing this package registers ``HAT`` in BasicSR's ``ARCH_REGISTRY``."""
from hat.archs.hat_arch import HAT

__all__ = ['HAT']
