"""``cnnlab.explain``: the front door to :mod:`cnnlab.analysis.explain` for a run, a Predictor or a module."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from cnnlab.analysis.explain import METHODS, Explanation
from cnnlab.analysis.explain import explain as explain_module
from cnnlab.analysis.report import explain_test_image
from cnnlab.core.i18n import _
from cnnlab.core.runs import RunDir, reading
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


def explain_run(
    run_dir: str | os.PathLike,
    *,
    index: int | None = None,
    image: str | os.PathLike | None = None,
    target: int | str | None = None,
    method: str = METHODS[0],
    model: nn.Module | None = None,
    data_dir: str | None = None,
    device: str = "auto",
) -> tuple[Explanation, str]:
    """A run's ``best.pt`` explained on test image ``index`` (default 0) or on the user's ``image`` file.

    Returns the explanation and a caption for its input picture.
    """
    if image is not None:
        ex = explain(run_dir, image, target=target, model=model, method=method, device=device)
        p = ex.prediction
        return ex, _("{image}: predicted {pred} ({prob})").format(image=os.fspath(image), pred=p.label,
                                                                 prob=f"{p.probability:.0%}")
    return explain_test_image(run_dir, index=index or 0, data_dir=data_dir, device=device, target=target,
                              method=method)


def visualize(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    index: int | None = None,
    image: str | os.PathLike | None = None,
    target: int | str | None = None,
    method: str = METHODS[0],
    max_maps: int = 32,
    data_dir: str | None = None,
    device: str = "auto",
) -> tuple[Explanation, list[Path]]:
    """:func:`explain_run`, written as PNGs (:meth:`Explanation.save`) to ``out_dir`` (default ``RUN/visualize``)."""
    with reading(run_dir):  # the pictures are of the best.pt beside them: no training replaces it meanwhile
        ex, caption = explain_run(run_dir, index=index, image=image, target=target, method=method,
                                  data_dir=data_dir, device=device)
        out = Path(out_dir) if out_dir is not None else RunDir(Path(run_dir)).visualize
        return ex, ex.save(out, caption=caption, max_maps=max_maps)
