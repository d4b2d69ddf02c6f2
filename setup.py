"""Packaging for `hat`: the Hybrid Attention Transformer as a BasicSR plugin."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_version() -> str:
    """Read ``__version__`` from hat/version.py without importing the package."""
    namespace: dict = {}
    exec((ROOT / 'hat' / 'version.py').read_text(), namespace)
    return namespace['__version__']


setup(
    name='hat',
    version=read_version(),
    description='HAT (Hybrid Attention Transformer) for image super-resolution, as a BasicSR plugin',
    long_description=(ROOT / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['hat', 'hat.*']),
    include_package_data=True,
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.1',
        'torchvision',
        'numpy',
        'opencv-python',
        'Pillow',
        'lmdb',
        'pyyaml',
        'safetensors',
        'tqdm',
    ],
    extras_require={
        'test': ['pytest>=7', 'scikit-image', 'ruff', 'onnx', 'onnxscript', 'onnxruntime', 'spandrel>=0.4.2,<0.5'],
    },
    entry_points={'console_scripts': [
        'hat-upscale=hat.inference.upscale_cli:main',
        'hat-convert=hat.weights.convert:main',
        'hat-export=hat.weights.export:main',
        'hat-lam=hat.analysis.cli:main',
    ]},
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
