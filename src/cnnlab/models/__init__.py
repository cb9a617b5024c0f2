"""Model registry: ``create_model(name, ...)`` and ``list_models()``.

A model family lives in its own file and registers its constructors with
:func:`register_model`. Every constructor takes ``in_channels``,
``num_classes`` and ``image_size`` so that any model can be built for any
dataset's input shape.
"""
from __future__ import annotations

from cnnlab.models.registry import create_model, get_model_entry, list_models, register_model

# Importing the family modules registers their models.
from cnnlab.models import lenet  # noqa: F401,E402

__all__ = ["create_model", "get_model_entry", "list_models", "register_model"]
