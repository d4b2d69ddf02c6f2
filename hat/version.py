"""Package version, read by setup.py and exposed as ``hat.__version__``."""
__version__ = '0.1.0'
