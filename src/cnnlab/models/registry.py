"""The registry itself, apart from the families so they can import it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import _

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: ModelFn
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str = "") -> Callable[[ModelFn], ModelFn]:
    """Decorator: make ``fn(in_channels=, num_classes=, image_size=, **kw)`` available by name."""

    def wrap(fn: ModelFn) -> ModelFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc_lines = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(name, fn, description or (doc_lines[0] if doc_lines else ""))
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(_("unknown model {name!r}; available: {names}").format(
            name=name, names=", ".join(list_models()))) from None


def create_model(
    name: str, *, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, **kwargs: Any
) -> nn.Module:
    """Build a registered model for inputs of shape (in_channels, image_size, image_size)."""
    entry = get_model_entry(name)
    return entry.fn(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
