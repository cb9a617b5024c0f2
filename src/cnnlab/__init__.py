"""cnnlab: train, understand and ship small convolutional image classifiers.

The library is usable from a notebook; the ``cnnlab`` command line is a thin
layer over the same calls.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    # `cnnlab.load` imports torch and the model code only when first used, so `import cnnlab`
    # (and `cnnlab --help`) stay light.
    if name == "load":
        from cnnlab.apps.predict import load

        return load
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
