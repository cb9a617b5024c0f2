"""``cnnlab.explain``: the front door to :mod:`cnnlab.analysis.explain` for a run, a Predictor or a module."""
from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from cnnlab.analysis.explain import METHODS, Explanation
from cnnlab.analysis.explain import explain as explain_module
from cnnlab.service.predictor import Predictor, load


def explain(
    run_or_model: str | os.PathLike | Predictor | nn.Module,
    image: Any,
    *,
    target: int | str | None = None,
    model: nn.Module | None = None,
    method: str = METHODS[0],
    device: str = "cpu",
) -> Explanation:
    """Every layer's output for one image, the prediction and which pixels drove it.

    ``run_or_model``: a run folder or checkpoint (its ``best.pt``; ``model=`` a fresh instance of your
    own class for a run of one), a :class:`Predictor`, or any ``nn.Module``. With a run or a Predictor,
    ``image`` is anything ``cnnlab predict`` reads (a path, bytes, a PIL image, pixels) and is
    preprocessed as the training data was; with a module it is the model's input tensor (C, H, W).
    ``target``: the class to attribute (index or name); by default the predicted one.
    """
    if isinstance(run_or_model, (str, os.PathLike)):
        run_or_model = load(run_or_model, model=model, device=device)
    return explain_module(run_or_model, image, target=target, method=method)
