"""cnnlab: train, understand and ship small convolutional image classifiers.

The library is usable from a notebook; the ``cnnlab`` command line is a thin
layer over the same calls.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
