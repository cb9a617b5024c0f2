"""Model registry: ``create_model(name, ...)`` and ``list_models()``.

A model family lives in its own file and registers its constructors with
:func:`register_model`. Every constructor takes ``in_channels``,
``num_classes`` and ``image_size`` so that any model can be built for any
dataset's input shape.
"""
from __future__ import annotations

from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import _

# Importing the family modules registers their models.
from cnnlab.models import classic, lenet, modern  # noqa: F401,E402
from cnnlab.models.registry import (
    create_model,
    get_model_entry,
    list_models,
    register_model,
)


def supports_pretrained(name: str) -> bool:
    """Whether a registered model can load torchvision's ImageNet weights (``pretrained=True``)."""
    import inspect

    return "pretrained" in inspect.signature(get_model_entry(name).fn).parameters


def check_pretrained(name: str) -> None:
    if not supports_pretrained(name):

        have = ", ".join(n for n in list_models() if supports_pretrained(n))
        raise ConfigError(_("model {name!r} has no pretrained weights; these do: {have}").format(name=name, have=have),
                          option="model.pretrained")


__all__ = ["check_pretrained", "create_model", "get_model_entry", "list_models", "register_model", "supports_pretrained"]
