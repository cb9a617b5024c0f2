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

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from cnnlab.analysis.interpret import Interpretation
from cnnlab.analysis import figures as plots
from cnnlab.analysis.report import interpret_run, samples_figure
from cnnlab.core.config import CUSTOM_PREFIX, EVAL_BATCH_SIZE, Config, DataConfig, check_positive, load_recipe
from cnnlab.core.config import config_fields as config_field_list
from cnnlab.core.errors import (
    CnnlabError,
    ConfigError,
    OutputExistsError,
    ResumeChangeError,
    RunConfigMismatch,
)
from cnnlab.core.files import FolderNotFree
from cnnlab.core.i18n import _, check_language, use_language
from cnnlab.core.runs import default_run_dir
from cnnlab.data.images import pixels_to_uint8
from cnnlab.data.registry import list_datasets, split_pool
from cnnlab.data.tensors import DataBundle, DatasetInfo, ImageSet, label_problem
from cnnlab.models import list_models
from cnnlab.models.summary import ModelSummary, summarize_model
from cnnlab.models.summary import summarize as _summarize_module
from cnnlab.service.lr_find import NUM_IT, LRFinderResult
from cnnlab.service.lr_find import lr_find as find_lr
from cnnlab.service.runs import RunRecord, list_runs
from cnnlab.service.training import TrainResult, train_config

__all__ = ["TrainResult", "interpret", "list_datasets", "list_models", "lr_find", "runs", "show_batch", "summarize",
           "train"]


# --- the notebook API ------------------------------------------------------------------------

# Keyword -> (config section, key), for every config field; `optimizer` names optim.name.
_ALIASES = {"optimizer": "optim.name"}
_NOT_KEYWORDS = {"model.name", "optim.name", "data.dataset"}  # given as model=, optimizer=, data=


def _config_keywords() -> dict[str, str]:
    """Keyword -> dotted config key, for every config field but those given as model=, optimizer=, data=."""
    out = {alias: dotted for alias, dotted in _ALIASES.items()}
    for section, f in config_field_list():
        if f"{section}.{f.name}" not in _NOT_KEYWORDS:
            out[f.name] = f"{section}.{f.name}"
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
    lang: str | None = None,
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
    lang
        The language of the log, the test report and the run's figures: ``"es"``, ``"en"`` (default:
        ``CNNLAB_LANG``, else the locale, else English). It holds for this call and this run only.
    **config_fields
        Any config field by name: ``lr``, ``batch_size``, ``seed``, ``optimizer``, ``weight_decay``,
        ``schedule``, ``augment``, ``patience``, ``label_smoothing``, ``val_size``, ``split_seed``,
        ``device``, ``threads``, ``progress`` (a progress bar; off by default here), ...
        ``None`` means "not given": the recipe's value stays (as for every way of setting a config,
        :meth:`cnnlab.core.config.Config.apply`).

    Threads, global RNGs and allocator settings are as they were when this returns.
    """
    lang = check_language(lang) if lang is not None else None
    with use_language(lang):
        result = _train(model, data, test_data=test_data, classes=classes, data_dir=data_dir, run_dir=run_dir,
                        epochs=epochs, subset=subset, overwrite=overwrite, recipe=recipe, log=log, **config_fields)
    if lang is not None:
        result.lang = result.test.lang = lang
    return result


def _train(
    model: str | nn.Module, data: Any, *, test_data: Any, classes: Sequence[str] | None, data_dir: str | Path | None,
    run_dir: str | Path | None, epochs: int, subset: int | None, overwrite: bool, recipe: str | None,
    log: Callable[[str], None] | None, **config_fields: Any,
) -> TrainResult:
    cfg, own_model, load_data = _notebook_config(
        "train", model, data, test_data=test_data, classes=classes, recipe=recipe, log=log,
        settings={"epochs": epochs, "subset": subset, "data_dir": None if data_dir is None else str(data_dir),
                "progress": False, **config_fields})

    path = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    try:
        return train_config(cfg, path, log=log or (lambda _msg: None), model=model if own_model else None,
                            load_data=load_data, overwrite=overwrite)
    except CnnlabError as exc:
        exc.hint = exc.hint or python_hint(exc)
        raise


def python_hint(exc: CnnlabError) -> str | None:
    """The notebook API's way out of a library error, written from the data the error carries."""
    if isinstance(exc, RunConfigMismatch):
        return _("from Python: pass overwrite=True to replace it, or another run_dir")
    if isinstance(exc, ResumeChangeError):
        return _("from Python: call train() with the run's own settings to resume it, or pass another run_dir")
    if isinstance(exc, FolderNotFree):
        return _("choose an empty folder") if exc.foreign else _("pass overwrite=True to replace what cnnlab wrote there")
    if isinstance(exc, OutputExistsError):
        return _("pass overwrite=True to replace it")
    if exc.option == "resume":
        return _("call train() again with the same run_dir to resume")
    if exc.option == "run_dir":
        return _("choose another run_dir")
    return None
def lr_find(
    model: str | nn.Module = "lenet5",
    data: str | torch.utils.data.Dataset | tuple = "mnist",
    *,
    data_dir: str | Path | None = None,
    subset: int | None = None,
    recipe: str | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = NUM_IT,
    method: str = "steep",
    stop_factor: float | None = 4.0,
    **config_fields: Any,
) -> LRFinderResult:
    """The learning-rate range test (fastai's ``lr_find``): a suggested rate and the curve behind it.

    A copy of ``model`` trains for up to ``num_it`` steps while the rate grows exponentially from
    ``start_lr`` to ``end_lr``, as :func:`train` would train it (``data``, ``recipe`` and config
    fields such as ``optimizer``, ``batch_size``, ``loss_reduction`` mean the same). It stops once
    the smoothed loss passes ``stop_factor`` times its best. Nothing is written; your module,
    the thread count and the global random generators are as they were.

    ``result.suggestion``: the rate where the smoothed loss falls fastest (``method="steep"``,
    Lightning's), or the rate of its minimum divided by 10 (``method="minimum"``, fastai's
    ``lr_min``); both are in ``result.suggestions``. ``result.plot()``: the curve, inline in Jupyter.
    """
    cfg, own_model, load_data = _notebook_config(
        "lr_find", model, data, test_data=None, classes=None, recipe=recipe, log=None,
        settings={"subset": subset, "data_dir": None if data_dir is None else str(data_dir), "progress": False,
                  **config_fields})
    return find_lr(cfg, model=model if own_model else None, load_data=load_data, start_lr=start_lr, end_lr=end_lr,
                   num_it=num_it, method=method, stop_factor=stop_factor)


def show_batch(
    data: str | torch.utils.data.Dataset | tuple = "mnist",
    n: int = 32,
    *,
    split: str = "train",
    seed: int = 0,
    data_dir: str | Path | None = None,
    classes: Sequence[str] | None = None,
    download: bool = True,
    ncols: int = 8,
) -> Any:
    """``n`` random labelled images of ``data`` in a grid (fastai's ``show_batch``; ``cnnlab show-data``).

    ``data``: a dataset name, or your own data as :func:`train` takes it. Returns an ``InlineFigure``
    (shown inline in Jupyter; ``fig.savefig(path)`` saves it). The same ``seed`` shows the same images.
    """
    if isinstance(data, str):
        return samples_figure(data, data_dir=None if data_dir is None else str(data_dir), n=n, seed=seed,
                              split=split, download=download, ncols=ncols)
    check_positive(n=n)
    pool, _test, info = _user_sets(data, None, classes)
    idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[: min(n, len(pool))]
    return plots.samples_figure(pool.images[idx].numpy(), pool.labels[idx].numpy(), info.classes, ncols=ncols,
                                title=_("{n} random images (seed {seed})").format(n=len(idx), seed=seed))


def runs(folder: str | Path = "runs", *, sort: str | None = None, where: Sequence[str] = (),
         **filters: Any) -> list[RunRecord]:
    """Every run under ``folder``, one :class:`~cnnlab.service.runs.RunRecord` each (``cnnlab runs``).

    ``pd.DataFrame(cnnlab.runs())`` makes a table of them. Filter with keywords on record columns
    or config fields (``model="lenet5"``, ``lr=0.001``, ``state="finished"``) or ``where=["optim.lr=0.001"]``
    for dotted keys; ``sort="-test_acc"`` sorts (``-``: descending). A damaged folder is a record
    whose ``state`` is ``broken`` or ``incomplete``, never an exception.
    """
    return list_runs(folder, filters=[*where, *(f"{k}={v}" for k, v in filters.items())], sort=sort)


def interpret(
    run: TrainResult | str | Path,
    *,
    model: nn.Module | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
    lang: str | None = None,
) -> Interpretation:
    """A run's best checkpoint on its test set, as an :class:`Interpretation` (nothing is written).

    ``run``: what :func:`train` returned (``run.interpret()`` is the same), or a run directory; a
    directory of your own class needs ``model=YourClass()``. ``lang``: the language of its figures and
    text (``"es"``, ``"en"``; default ``CNNLAB_LANG``, else the locale, else English).
    """
    if isinstance(run, TrainResult):
        return run.interpret(batch_size=batch_size, lang=lang)
    interp = interpret_run(run, model=model, data_dir=None if data_dir is None else str(data_dir), device=device,
                           batch_size=batch_size)
    interp.lang = check_language(lang) if lang is not None else None
    return interp


def summarize(model: str | nn.Module, input_shape: Sequence[int] = (1, 28, 28), *,
              lang: str | None = None) -> ModelSummary:
    """Per-layer output shapes, parameters and multiply-adds for one image of ``input_shape`` (C, H, W).

    ``model``: your module or a registered model's name. ``print()`` it (or show it in Jupyter) for the table;
    ``.total_params``, ``.total_macs`` and ``.rows`` hold the numbers. ``lang``: the table's language
    (``"es"`` writes ``61.706`` parámetros; default ``CNNLAB_LANG``, else the locale, else English).
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise ConfigError(_("input_shape is (channels, height, width), got {shape}").format(shape=tuple(input_shape)))
    if isinstance(model, str):
        summary = summarize_model(model, shape)  # type: ignore[arg-type]
    else:
        summary = _summarize_module(model, shape, type(model).__name__)  # type: ignore[arg-type]
    summary.lang = check_language(lang) if lang is not None else None
    return summary


# --- helpers ---------------------------------------------------------------------------------


def _notebook_config(
    what: str, model: str | nn.Module, data: Any, *, test_data: Any, classes: Sequence[str] | None,
    recipe: str | None, log: Callable[[str], None] | None, settings: dict[str, Any],
) -> tuple[Config, bool, Callable[[DataConfig, torch.device], DataBundle] | None]:
    """The config a notebook call (``train``, ``lr_find``) describes, whether ``model`` is the user's
    module, and where the user's own data comes from (None: the dataset registry)."""
    keywords = _config_keywords()
    changes: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in keywords:
            raise ConfigError(_("{what}() got an unknown keyword {key!r}; config fields are: {fields}").format(what=what, key=key, fields=', '.join(sorted(keywords))), option=key)
        changes[keywords[key]] = value

    own_model = isinstance(model, nn.Module)
    if own_model:
        changes["model.name"] = f"{CUSTOM_PREFIX}{type(model).__name__}"
    elif isinstance(model, str):
        changes["model.name"] = model
    else:
        raise ConfigError(_("model must be a registered model's name or an nn.Module, got {type_name}").format(type_name=type(model).__name__))

    load_data = None
    if isinstance(data, str):
        if test_data is not None or classes is not None:
            raise ConfigError(_("test_data and classes go with your own data; a named dataset brings its own"))
        changes["data.dataset"] = data
    else:
        pool, test, info = _user_sets(data, test_data, classes)
        changes.update({"data.dataset": info.name, "data.download": False})
        if test is None and log:
            log(_("no test_data given: the validation images are also the test set"))
        load_data = _bundle_loader(pool, test, info)
    # One meaning of None, as everywhere (Config.apply): a keyword left at None keeps the recipe's value.
    cfg = (load_recipe(recipe) if recipe else Config()).apply(changes)
    if own_model and cfg.model.pretrained:
        raise ConfigError(_("pretrained=True loads torchvision's weights into a registry model; give a model name "
                            "(e.g. 'resnet18'), or load weights into your module yourself"),
                          option="pretrained")
    return cfg, own_model, load_data


def _user_sets(
    data: Any, test_data: Any, classes: Sequence[str] | None
) -> tuple[ImageSet, ImageSet | None, DatasetInfo]:
    """The user's training pool and test set as uint8 tensors, and what a checkpoint records about them."""
    pool_x, pool_y, kind = _as_tensors(data, "data")
    test = None
    if test_data is not None:
        test_x, test_y, _kind = _as_tensors(test_data, "test_data")
        if test_x.shape[1:] != pool_x.shape[1:]:
            raise ConfigError(_("test_data images are {shape}, data images {data_shape}").format(shape=tuple(test_x.shape[1:]), data_shape=tuple(pool_x.shape[1:])))
        test = (test_x, test_y)
    n_classes = int(max(pool_y.max(), test[1].max() if test else 0)) + 1 if len(pool_y) else 0
    if classes is None:
        names = [str(i) for i in range(n_classes)]
    else:
        names = [str(c) for c in classes]
        if len(names) < n_classes:
            raise ConfigError(_("{count} class names, but the labels go up to {highest}").format(count=len(names), highest=n_classes - 1))
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
        raise ConfigError(_("{what} must be a dataset name, a torch Dataset of (image, label) pairs or an (images, "
                            "labels) pair of tensors, got {type_name}").format(what=what, type_name=type(data).__name__))
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
        raise ConfigError(_("{what}: images must be (N, C, H, W) or (N, H, W), got shape {shape}").format(what=what, shape=tuple(images.shape)))
    if labels.dim() != 1 or len(labels) != len(images):
        raise ConfigError(_("{what}: {count} images need {count} integer labels, got shape {shape}").format(what=what, count=len(images), shape=tuple(labels.shape)))
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ConfigError(_("{what}: labels must be integers (class indices), got {dtype}").format(what=what, dtype=labels.dtype))
    if len(labels) and int(labels.min()) < 0:
        raise ConfigError(_("{what}: labels must be class indices >= 0, got {lowest}").format(what=what, lowest=int(labels.min())))
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
        raise ConfigError(_("{what} is empty").format(what=what))
    first = ds[0]
    if not (isinstance(first, (tuple, list)) and len(first) >= 2):
        raise ConfigError(_("{what}[0] must be an (image, label) pair, got {type_name}").format(what=what, type_name=type(first).__name__))
    if not isinstance(first[0], (torch.Tensor, np.ndarray)):
        raise ConfigError(_("{what}[0] image is a {type_name}; give the Dataset a transform that makes tensors, e.g. "
                            "torchvision.transforms.ToTensor()").format(what=what, type_name=type(first[0]).__name__))
    x0 = torch.as_tensor(first[0])
    images = torch.empty((n, *x0.shape), dtype=x0.dtype)
    labels = torch.empty(n, dtype=torch.long)
    for i in range(n):
        x, y = ds[i][:2] if i else first[:2]
        x = torch.as_tensor(x)
        if x.shape != x0.shape:
            raise ConfigError(_("{what}[{i}] image has shape {shape}, {what}[0] {first_shape}: resize them to one size (a transform)").format(what=what, i=i, shape=tuple(x.shape), first_shape=tuple(x0.shape)))
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
