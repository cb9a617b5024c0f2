"""The library's front door: train a model end to end, load it back, interpret it.

    run = cnnlab.train(Lenet5(), data="mnist", epochs=5)   # your own nn.Module, or a registry name
    run.history, run.best_epoch, run.test.accuracy          # print(run.test) for sklearn's report
    again = cnnlab.load(run.path, model=Lenet5())           # the best weights in a fresh instance
    interp = run.interpret()                                # test-set predictions, computed once
    interp.plot_misclassified(classes=[8, 4, 9])            # shows inline in Jupyter

Training a config end to end lives one floor down, in :mod:`cnnlab.service.training`
(``cnnlab train`` calls it too); loading a model for prediction in :mod:`cnnlab.service.predictor`.
Library calls leave the process as they found it (threads, global RNGs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from cnnlab.analysis.interpret import Interpretation
from cnnlab.analysis.report import interpret_run
from cnnlab.core.config import CUSTOM_PREFIX, EVAL_BATCH_SIZE, Config, DataConfig, load_recipe
from cnnlab.core.errors import ConfigError, RunDirError
from cnnlab.core.i18n import _
from cnnlab.core.runs import RunBusyError, RunDir, default_run_dir
from cnnlab.data.images import pixels_to_uint8
from cnnlab.data.registry import list_datasets, split_pool
from cnnlab.data.tensors import DataBundle, DatasetInfo, ImageSet, label_problem
from cnnlab.models import list_models
from cnnlab.models.summary import ModelSummary, summarize_model
from cnnlab.models.summary import summarize as _summarize_module
from cnnlab.service.training import TrainResult, train_config

__all__ = ["TrainResult", "interpret", "list_datasets", "list_models", "summarize", "train"]


# --- the notebook API ------------------------------------------------------------------------

# Keyword -> (config section, key), for every config field; `optimizer` names optim.name.
_ALIASES = {"optimizer": ("optim", "name")}
_NOT_KEYWORDS = {("model", "name"), ("optim", "name"), ("data", "dataset")}  # given as model=, optimizer=, data=


def _config_keywords() -> dict[str, tuple[str, str]]:
    out = dict(_ALIASES)
    cfg = Config()
    for section in ("data", "model", "optim", "train"):
        for f in fields(getattr(cfg, section)):
            if (section, f.name) not in _NOT_KEYWORDS:
                out[f.name] = (section, f.name)
    return out


def train(
    model: str | nn.Module = "lenet5",
    data: str | torch.utils.data.Dataset | tuple = "mnist",
    *,
    test_data: torch.utils.data.Dataset | tuple | None = None,
    classes: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    epochs: int = 5,
    subset: int | None = None,
    overwrite: bool = False,
    recipe: str | None = None,
    log: Callable[[str], None] | None = print,
    **config_fields: Any,
) -> TrainResult:
    """Train a model with the lesson's recipe; return the run (history, best epoch, test report, model).

    model
        A registered model's name (``cnnlab.list_models()``), or any ``nn.Module`` you wrote. Your
        module is trained in place, from the weights it has (call ``torch.manual_seed`` before
        building it for a reproducible start); afterwards it holds the best epoch's weights.
        Its run records the model as ``custom:ClassName``: load it back with
        ``cnnlab.load(run.path, model=ClassName())``.
    data
        A dataset name (``cnnlab.list_datasets()``); or your own data: a ``torch.utils.data.Dataset``
        of ``(image, label)`` pairs, or an ``(images, labels)`` pair of tensors. Images are (C, H, W)
        (or (H, W)) tensors, uint8 or float in [0, 1] (what ``ToTensor()`` gives; kept as 8-bit,
        exact for ``ToTensor``'s output); normalisation belongs in the model. The validation split
        (``val_size``, ``split_seed``) is taken from it.
    test_data
        Your own test set, like ``data``. Without it, the validation images are also the test set
        (as in fastai), and the run says so.
    classes
        Class names for your own data (default ``"0"``, ``"1"``, ...).
    data_dir, run_dir, epochs, subset
        Where datasets live (default ``$CNNLAB_DATA_DIR``, else the cache); the run folder (default
        ``runs/MODEL-DATA-TIME``); epochs; keep only the first ``subset`` training images.
    overwrite
        Start afresh: delete what cnnlab wrote in ``run_dir`` (its run files, ``analysis/``,
        ``visualize/``), and nothing else; a folder that holds anything else is refused with a list of
        it. Otherwise a run directory with the same config is resumed (a finished one is returned as it is).
    recipe
        A named recipe (``tutorial``, ...) or a TOML file to start from instead of the lesson's defaults.
    log
        Where the per-epoch lines go (``None``: nowhere).
    **config_fields
        Any config field by name: ``lr``, ``batch_size``, ``seed``, ``optimizer``, ``weight_decay``,
        ``schedule``, ``augment``, ``patience``, ``label_smoothing``, ``val_size``, ``split_seed``,
        ``device``, ``threads``, ``progress`` (a progress bar; off by default here), ...

    Threads, global RNGs and allocator settings are as they were when this returns.
    """
    cfg = load_recipe(recipe) if recipe else Config()
    keywords = _config_keywords()
    changes: dict[str, dict[str, Any]] = {}
    for key, value in {"epochs": epochs, "subset": subset, "data_dir": None if data_dir is None else str(data_dir),
                       "progress": False, **config_fields}.items():
        if key not in keywords:
            raise ConfigError(f"train() got an unknown keyword {key!r}; config fields are: {', '.join(sorted(keywords))}")
        section, name = keywords[key]
        changes.setdefault(section, {})[name] = value
    for section, values in changes.items():
        cfg = _set(cfg, section, values)

    own_model = isinstance(model, nn.Module)
    if own_model:
        if cfg.model.pretrained:
            raise ConfigError("pretrained=True loads torchvision's weights into a registry model; "
                              "give a model name (e.g. 'resnet18'), or load weights into your module yourself")
        cfg = _set(cfg, "model", {"name": f"{CUSTOM_PREFIX}{type(model).__name__}"})
    elif isinstance(model, str):
        cfg = _set(cfg, "model", {"name": model})
    else:
        raise ConfigError(f"model must be a registered model's name or an nn.Module, got {type(model).__name__}")

    load_data = None
    if isinstance(data, str):
        if test_data is not None or classes is not None:
            raise ConfigError("test_data and classes go with your own data; a named dataset brings its own")
        cfg = _set(cfg, "data", {"dataset": data})
    else:
        pool, test, info = _user_sets(data, test_data, classes)
        cfg = _set(cfg, "data", {"dataset": info.name, "download": False})
        if test is None and log:
            log("no test_data given: the validation images are also the test set")
        load_data = _bundle_loader(pool, test, info)

    path = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    try:
        return train_config(cfg, path, log=log or (lambda _msg: None), model=model if own_model else None,
                            load_data=load_data, overwrite=overwrite)
    except RunBusyError:
        raise
    except RunDirError as exc:
        if "different config" in str(exc) or "not empty" in str(exc):
            raise RunDirError(_("{error} (from Python: pass overwrite=True to replace it, or another run_dir)").format(
                error=exc)) from None
        raise


def interpret(
    run: TrainResult | str | Path,
    *,
    model: nn.Module | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
) -> Interpretation:
    """A run's best checkpoint on its test set, as an :class:`Interpretation` (nothing is written).

    ``run``: what :func:`train` returned (``run.interpret()`` is the same), or a run directory; a
    directory of your own class needs ``model=YourClass()``.
    """
    if isinstance(run, TrainResult):
        return run.interpret(batch_size=batch_size)
    return interpret_run(run, model=model, data_dir=None if data_dir is None else str(data_dir), device=device,
                         batch_size=batch_size)


def summarize(model: str | nn.Module, input_shape: Sequence[int] = (1, 28, 28)) -> ModelSummary:
    """Per-layer output shapes, parameters and multiply-adds for one image of ``input_shape`` (C, H, W).

    ``model``: your module or a registered model's name. ``print()`` it (or show it in Jupyter) for the table;
    ``.total_params``, ``.total_macs`` and ``.rows`` hold the numbers.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise ConfigError(f"input_shape is (channels, height, width), got {tuple(input_shape)}")
    if isinstance(model, str):
        return summarize_model(model, shape)  # type: ignore[arg-type]
    return _summarize_module(model, shape, type(model).__name__)  # type: ignore[arg-type]


# --- helpers ---------------------------------------------------------------------------------


def _set(cfg: Config, section: str, values: dict[str, Any]) -> Config:
    """``cfg`` with ``values`` set in ``section``; unlike Config.override, ``None`` is a value (subset=None)."""
    new = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
    new.validate()
    return new


def _user_sets(
    data: Any, test_data: Any, classes: Sequence[str] | None
) -> tuple[ImageSet, ImageSet | None, DatasetInfo]:
    """The user's training pool and test set as uint8 tensors, and what a checkpoint records about them."""
    pool_x, pool_y, kind = _as_tensors(data, "data")
    test = None
    if test_data is not None:
        test_x, test_y, _ = _as_tensors(test_data, "test_data")
        if test_x.shape[1:] != pool_x.shape[1:]:
            raise ConfigError(f"test_data images are {tuple(test_x.shape[1:])}, data images {tuple(pool_x.shape[1:])}")
        test = (test_x, test_y)
    n_classes = int(max(pool_y.max(), test[1].max() if test else 0)) + 1 if len(pool_y) else 0
    if classes is None:
        names = [str(i) for i in range(n_classes)]
    else:
        names = [str(c) for c in classes]
        if len(names) < n_classes:
            raise ConfigError(f"{len(names)} class names, but the labels go up to {n_classes - 1}")
    c, h, w = (int(d) for d in pool_x.shape[1:])
    info = DatasetInfo(f"{CUSTOM_PREFIX}{kind}", names, c, h, {"style": "resize", "size": h, "channels": c})
    pool = ImageSet(pool_x, pool_y, names)
    test_set = ImageSet(test[0], test[1], names) if test else None
    for part, data in (("data", pool), ("test_data", test_set)):
        if data is not None:
            problem = label_problem(data.labels, len(names))
            if problem:
                raise ConfigError(f"{part}: {problem}")
    return pool, test_set, info


def _as_tensors(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images uint8 (N, C, H, W), labels int64 (N,), a name for the data) from a tensor pair or a Dataset."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], torch.utils.data.Dataset):
        images, labels = data  # labels are converted below, where class names given as labels are named
        if not isinstance(images, torch.Tensor):
            array = np.asarray(images)
            if array.dtype.kind not in "biuf":
                raise ConfigError(_("{what}: the images are an array of {dtype}; give numbers (uint8 pixels or "
                                    "floats in [0, 1])").format(what=what, dtype=array.dtype))
            images = torch.as_tensor(array)
        kind = "tensors"
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        images, labels = _read_dataset(data, what)
        kind = type(data).__name__
    else:
        raise ConfigError(f"{what} must be a dataset name, a torch Dataset of (image, label) pairs or an "
                          f"(images, labels) pair of tensors, got {type(data).__name__}")
    for tensor, part in ((images, _("images")), (labels, _("labels"))):
        if isinstance(tensor, torch.Tensor) and tensor.device.type == "meta":
            raise ConfigError(_("{what}: the {part} are on the meta device (they have no values yet); give real "
                                "tensors").format(what=what, part=part))
    labels = _as_label_tensor(labels, what)
    images = images.detach().cpu()
    if images.dtype == torch.bool:
        raise ConfigError(_("{what}: the images are bool; give uint8 pixels (0..255) or floats in [0, 1], so "
                            "that white is unambiguous (a bool True could mean 1 or 255)").format(what=what))
    if images.is_floating_point() and images.dtype != torch.float32:
        images = images.float()  # float16/bfloat16/float64 pixels: NumPy has no bfloat16
    if images.is_complex():
        raise ConfigError(_("{what}: the images are complex numbers; give uint8 pixels or floats in [0, 1]").format(
            what=what))
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, H, W): one channel
    if images.dim() != 4:
        raise ConfigError(f"{what}: images must be (N, C, H, W) or (N, H, W), got shape {tuple(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ConfigError(f"{what}: {len(images)} images need {len(images)} integer labels, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ConfigError(f"{what}: labels must be integers (class indices), got {labels.dtype}")
    if len(labels) and int(labels.min()) < 0:
        raise ConfigError(f"{what}: labels must be class indices >= 0, got {int(labels.min())}")
    return _to_uint8(images, what), labels.long(), kind


def _as_label_tensor(labels: Any, what: str) -> torch.Tensor:
    """Labels as a CPU tensor; class names given as labels get a line that says to map them to indices."""
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu()
    array = np.asarray(labels)
    if array.dtype.kind in "USO":
        first = array.reshape(-1)[0] if array.size else None
        first = str(first) if array.dtype.kind in "US" else first
        raise ConfigError(_("{what}: the labels are {kind} (like {first!r}), not class indices; give the indices "
                            "0..K-1 and the names as classes=[...]").format(
            what=what, kind=_("strings") if array.dtype.kind in "US" else _("objects"), first=first))
    return torch.as_tensor(array)


def _read_dataset(ds: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(ds)
    if n == 0:
        raise ConfigError(f"{what} is empty")
    first = ds[0]
    if not (isinstance(first, (tuple, list)) and len(first) >= 2):
        raise ConfigError(f"{what}[0] must be an (image, label) pair, got {type(first).__name__}")
    if not isinstance(first[0], (torch.Tensor, np.ndarray)):
        raise ConfigError(f"{what}[0] image is a {type(first[0]).__name__}; give the Dataset a transform that "
                          "makes tensors, e.g. torchvision.transforms.ToTensor()")
    x0 = torch.as_tensor(first[0])
    images = torch.empty((n, *x0.shape), dtype=x0.dtype)
    labels = torch.empty(n, dtype=torch.long)
    for i in range(n):
        x, y = ds[i][:2] if i else first[:2]
        x = torch.as_tensor(x)
        if x.shape != x0.shape:
            raise ConfigError(f"{what}[{i}] image has shape {tuple(x.shape)}, {what}[0] {tuple(x0.shape)}: "
                              "resize them to one size (a transform)")
        images[i] = x
        try:
            labels[i] = int(y)
        except (TypeError, ValueError):
            raise ConfigError(_("{what}[{i}] label is {label!r}, not a class index; give the indices 0..K-1 and "
                                "the names as classes=[...]").format(what=what, i=i, label=y)) from None
    return images, labels


def _to_uint8(images: torch.Tensor, what: str) -> torch.Tensor:
    """The user's images as uint8, under the pixel policy prediction uses too (data/images)."""
    if images.dtype == torch.uint8:
        return images.contiguous()
    return torch.from_numpy(np.ascontiguousarray(pixels_to_uint8(images, what, error=ConfigError)))


def _bundle_loader(
    pool: ImageSet, test: ImageSet | None, info: DatasetInfo
) -> Callable[[DataConfig, torch.device], DataBundle]:
    """The user's data, split as the config says (as ``prepare_data`` splits a named dataset)."""

    def load_data(cfg: DataConfig, device: torch.device) -> DataBundle:
        return split_pool(pool, test, info, cfg, device)

    return load_data
