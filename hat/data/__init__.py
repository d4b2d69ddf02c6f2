"""HAT's BasicSR datasets: importing this package registers them in ``DATASET_REGISTRY``."""
