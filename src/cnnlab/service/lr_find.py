"""The learning-rate finder as the front doors use it: the range test (``engine/lr_find``) and its figure.

    result = cnnlab.lr_find("lenet5", "mnist")   # or your nn.Module and data
    result.suggestion; result.plot()              # the curve, inline in Jupyter
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable

import torch.nn as nn

from cnnlab.analysis.figures import lr_find_figure
from cnnlab.core.config import Config
from cnnlab.core.i18n import _
from cnnlab.engine.lr_find import NUM_IT, DataSource, RangeTest, range_test  # noqa: F401 (NUM_IT: the front doors' default)


class LRFinderResult(RangeTest):
    """The range test's curve and suggestions (see :class:`cnnlab.engine.lr_find.RangeTest`), with a figure."""

    def plot(self) -> Any:
        """The loss against the learning rate, suggestions marked: an ``InlineFigure``."""
        return lr_find_figure(self.lrs, self.losses, self.smoothed, self.suggestions, self.method)

    def text(self) -> str:
        """One line for a terminal: the suggested rate and how it was read from the curve."""
        how = {"steep": _("steepest descent of the smoothed loss"), "minimum": _("minimum of the smoothed loss / 10")}
        short = {"steep": _("steepest descent"), "minimum": _("minimum/10")}
        other = [f"{short.get(name, name)} {value:.1e}" for name, value in self.suggestions.items()
                 if name != self.method and value is not None]
        if self.suggestion is None:
            return _("no suggestion: the loss curve is too short ({n} steps); give more steps or a wider range").format(
                n=len(self.lrs))
        line = _("suggested learning rate: {lr:.1e} ({how})").format(lr=self.suggestion, how=how[self.method])
        return line + (f"; {', '.join(other)}" if other else "")


def lr_find(cfg: Config, *, model: nn.Module | None = None, load_data: DataSource | None = None,
            on_step: Callable[[int, float, float], None] | None = None, **options: Any) -> LRFinderResult:
    """Run the range test as ``cfg`` trains (model, data, optimizer, batch size, loss); nothing is written.

    ``options``: ``start_lr``, ``end_lr``, ``num_it``, ``stop_factor``, ``beta``, ``method``
    (:func:`cnnlab.engine.lr_find.range_test`).
    """
    result = range_test(cfg, model=model, load_data=load_data, on_step=on_step, **options)
    return LRFinderResult(**{f.name: getattr(result, f.name) for f in fields(result)})
