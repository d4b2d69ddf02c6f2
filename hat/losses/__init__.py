"""HAT's losses: importing this package registers them in BasicSR's ``LOSS_REGISTRY``."""
from hat.losses.local_vgg import LocalVGGPerceptualLoss, build_vgg_feature_extractor

__all__ = ['LocalVGGPerceptualLoss', 'build_vgg_feature_extractor']
