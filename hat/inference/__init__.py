"""Inference: the tiled, memory-planned upscaler, its command line (``hat-upscale``), precision and image I/O."""
