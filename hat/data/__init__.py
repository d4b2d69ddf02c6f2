"""HAT's BasicSR datasets: importing this package registers them in ``DATASET_REGISTRY``."""
from hat.data.hr_only_dataset import HROnlyDataset, ImageNetPairedDataset

__all__ = ['HROnlyDataset', 'ImageNetPairedDataset']
