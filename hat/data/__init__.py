"""HAT's BasicSR datasets: importing this package registers them in ``DATASET_REGISTRY``."""
from hat.data.hr_only_dataset import HROnlyDataset, ImageNetPairedDataset
from hat.data.realhat_dataset import RealHATDataset

__all__ = ['HROnlyDataset', 'ImageNetPairedDataset', 'RealHATDataset']
