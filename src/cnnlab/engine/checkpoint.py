"""Versioned checkpoint payloads: atomic save, safe load.

A checkpoint is a dict of plain values (str, int, float, bool, None, lists,
dicts) and tensors, so it loads with ``torch.load(weights_only=True)``: a
file from anywhere can never run code on the user's machine. Loading never
falls back to the unsafe unpickler.

Payload (schema 1)::

    schema, kind ("best" | "last"), cnnlab_version, torch_version,
    model: {name, in_channels, num_classes, image_size},
    data: {name, classes, channels, image_size, preprocess},
    state_dict, config, epoch, metrics,
    ... plus the training state in "last" checkpoints (optimizer, trainer, rng, split)
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnlab import __version__
from cnnlab.core.config import CUSTOM_PREFIX, is_custom
from cnnlab.core.errors import CheckpointError, first_line
from cnnlab.core.files import write_bytes
from cnnlab.core.i18n import _
from cnnlab.models import create_model
from cnnlab.models.tta import ShiftTTA

SCHEMA_VERSION = 1


def make_payload(
    model: nn.Module,
    *,
    model_name: str,
    data_info: dict,
    config: dict,
    epoch: int,
    metrics: dict,
    kind: str = "best",
    **extra: Any,
) -> dict:
    """Everything needed to rebuild and explain a trained model, as plain values."""
    payload = {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "cnnlab_version": __version__,
        "torch_version": str(torch.__version__),
        "model": {
            "name": model_name,
            "in_channels": int(data_info["channels"]),
            "num_classes": len(data_info["classes"]),
            "image_size": int(data_info["image_size"]),
        },
        "data": data_info,
        # Clone to CPU so the saved tensors do not alias live training memory.
        "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()},
        "config": config,
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    payload.update(extra)
    return payload


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Serialise in memory, then write atomically: a crash never leaves a torn file."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(path, buf.getvalue())


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", training_state: bool = False
) -> dict:
    """Load a cnnlab checkpoint with ``weights_only=True``; clear errors for everything else.

    The payload's schema is checked, so a file that loads but is malformed (no ``model``
    entry, a string where a table belongs) is a :class:`CheckpointError` naming the file and
    the entry. ``training_state=True`` (resuming from ``last.pt``) also requires the optimizer,
    trainer position, RNG, split, best-so-far and history entries.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(_("checkpoint {path} does not exist").format(path=path))
    not_one = not_a_checkpoint(path)
    if not_one:
        raise CheckpointError(not_one)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would be a second line
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        if _has_code(path):  # weights_only refused a global it does not know: the code-execution guard
            raise CheckpointError(
                _("refusing to load {path}: it contains pickled Python objects, which could run code on this "
                  "machine. cnnlab checkpoints hold only tensors and plain values; re-create the checkpoint "
                  "with cnnlab, or load it yourself only if you trust its source.").format(path=path)
            ) from None
        raise _corrupted(path, _("its pickled data is damaged")) from None
    except Exception as exc:  # noqa: BLE001 -- torch.load on damaged bytes raises almost anything (KeyError, IndexError, ...)
        raise _corrupted(path, exc) from None
    if not isinstance(payload, dict) or "schema" not in payload or "state_dict" not in payload:
        raise CheckpointError(_("{path} is not a cnnlab checkpoint (no schema/state_dict entries)").format(path=path))
    schema = payload["schema"]
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise CheckpointError(
            _("{path} was written with checkpoint schema {schema!r}, newer than this cnnlab ({version}, "
              "schema {supported}) understands; upgrade cnnlab to load it").format(path=path, schema=schema, version=__version__, supported=SCHEMA_VERSION)
        )
    problem = payload_problem(payload, training_state=training_state)
    if problem:
        raise CheckpointError(_("{path} is a malformed cnnlab checkpoint: {problem}. Use another checkpoint or retrain.").format(path=path, problem=problem))
    return payload


def _corrupted(path: Path, exc: BaseException | str) -> CheckpointError:
    reason = exc if isinstance(exc, str) else first_line(exc)
    return CheckpointError(
        _("cannot read checkpoint {path}: the file is truncated or corrupted ({reason}). Use another "
          "checkpoint (best.pt / last.pt) or retrain.").format(path=path, reason=reason)
    )


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_PICKLE_PROTO = 0x80  # a pickle of protocol >= 2 starts with PROTO: torch's legacy format


def not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a PyTorch checkpoint, from its first bytes (None when it may be one).

    A Git LFS pointer (a clone without ``git lfs pull``) and text files (a web page saved as
    best.pt, a note) get their own line; so does anything that is neither torch's zip format
    nor a pickle. Nothing is unpickled.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        return _("cannot read checkpoint {path}: {reason}").format(path=path, reason=exc.strerror or exc)
    if head.startswith(_ZIP_MAGIC) or (head[:1] and head[0] == _PICKLE_PROTO):
        return None
    if head.startswith(_LFS_POINTER):
        return _("{path} is a Git LFS pointer, not the checkpoint itself: run git lfs pull in its "
                 "repository to download it").format(path=path)
    if not head:
        return _("{path} is empty, not a PyTorch checkpoint; use another checkpoint or retrain").format(path=path)
    try:
        text: str | None = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut by the 512-byte read is still text
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else None
    if text is not None and all(c.isprintable() or c in "\r\n\t\f" for c in text):
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return _("{path} is not a PyTorch checkpoint (it is text: {first!r}); use another checkpoint "
                 "or retrain").format(path=path, first=first)
    return _("{path} is not a PyTorch checkpoint (neither torch's zip format nor a pickle: it starts with "
             "bytes {head}); use another checkpoint or retrain").format(path=path, head=head[:8].hex(" "))


# Opcodes through which a pickle names or calls Python code (a class, a function); a checkpoint of
# tensors and plain values needs none of them except the few torch's own loader allows.
_CODE_OPS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _has_code(path: Path) -> bool:
    """Whether the pickle in ``path`` (torch's zip format, or a bare pickle) names Python code.

    Read with :mod:`pickletools` (which parses, never executes). A pickle that cannot even be parsed
    is damaged, not dangerous.
    """
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not names or zf.getinfo(names[0]).file_size > 64 << 20:
                    return False
                data = zf.read(names[0])
        else:
            data = path.read_bytes() if path.stat().st_size <= 64 << 20 else b""
        return any(op.name in _CODE_OPS for op, _arg, _pos in pickletools.genops(data))
    except Exception:  # noqa: BLE001 -- a pickle pickletools cannot parse is damaged, not code
        return False


_INT = (int,)
_NUMBER = (int, float)


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return type(value).__name__


def payload_problem(payload: dict, *, training_state: bool = False) -> str | None:
    """What is wrong with a loaded payload's structure (the first problem), or None when it is sound.

    Checks types, not values: the values are checked where they are used (preprocessing,
    class names), each with its own message.
    """
    model = payload.get("model")
    if not isinstance(model, dict):
        return _("'model' must be a table (name, in_channels, num_classes, image_size), not {type_name}").format(type_name=_type_name(model))
    if not isinstance(model.get("name"), str):
        return _("model.name must be a model name, not {value!r}").format(value=model.get('name'))
    for key in ("in_channels", "num_classes", "image_size"):
        if not _is(model.get(key), _INT) or model[key] < 1:
            return _("model.{key} must be a whole number >= 1, not {value!r}").format(key=key, value=model.get(key))
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return _("'state_dict' must map parameter names to tensors")
    for key, kinds in (("data", (dict,)), ("config", (dict,)), ("metrics", (dict,)), ("kind", (str,)), ("epoch", _INT)):
        if key in payload and not _is(payload[key], kinds):
            return _("'{key}' must be a {kind}, not {type_name}").format(key=key, kind=kinds[0].__name__, type_name=_type_name(payload[key]))
    data = payload.get("data") or {}
    if "classes" in data and not (isinstance(data["classes"], list) and all(isinstance(c, (str, int)) for c in data["classes"])):
        return _("data.classes must be a list of class names")
    for key in ("channels", "image_size"):
        if key in data and not _is(data[key], _INT):
            return _("data.{key} must be a whole number, not {value!r}").format(key=key, value=data[key])
    if "metrics" in payload and not all(_is(v, _NUMBER) for v in payload["metrics"].values()):
        return _("metrics must map names to numbers")
    if training_state:
        return _training_state_problem(payload)
    return None


def _training_state_problem(payload: dict) -> str | None:
    optimizer = payload.get("optimizer")
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("param_groups"), list) \
            or not isinstance(optimizer.get("state"), dict):
        return _("'optimizer' must be an optimizer state (state, param_groups)")
    trainer = payload.get("trainer")
    if not isinstance(trainer, dict) or not _is(trainer.get("iteration"), _INT) or trainer["iteration"] < 0 \
            or not _is(trainer.get("epoch_length"), _INT) or trainer["epoch_length"] < 1:
        return _("'trainer' must hold the iteration (>= 0) and epoch_length (>= 1)")
    rng = payload.get("rng")
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor) \
            or not isinstance(rng.get("python"), list) or not isinstance(rng.get("numpy"), dict):
        return _("'rng' must hold the torch, python and numpy random states")
    split = payload.get("split")
    if not isinstance(split, dict) or not all(isinstance(split.get(k), torch.Tensor) for k in ("train", "val")):
        return _("'split' must hold the train and val index tensors")
    best = payload.get("best")
    if not isinstance(best, dict) or not _is(best.get("loss"), _NUMBER) or not _is(best.get("epoch"), _INT):
        return _("'best' must hold the best validation loss and its epoch")
    history = payload.get("history")
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        return _("'history' must be a list of per-epoch rows")
    return None


# The entries of a metrics row that best.pt records: the numbers of the model itself, not timings.
BEST_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def best_metrics(row: dict) -> dict[str, float]:
    """The part of an epoch's metrics row that goes into that epoch's ``best.pt``."""
    return {k: float(row[k]) for k in BEST_METRICS if _is(row.get(k), _NUMBER)}


def best_from_last(last: dict) -> dict:
    """The ``best.pt`` payload of the epoch a ``last.pt`` was saved at the end of.

    Used to repair a run killed between the two writes of that epoch (``last.pt`` is written
    first): the weights at the end of the best epoch are ``last.pt``'s weights, so the result
    equals the file the uninterrupted run writes.
    """
    epoch = int(last["best"]["epoch"])
    row = next((r for r in last["history"] if r.get("epoch") == epoch), {})
    return {
        "schema": last["schema"],
        "kind": "best",
        "cnnlab_version": last["cnnlab_version"],
        "torch_version": last["torch_version"],
        "model": last["model"],
        "data": last["data"],
        "state_dict": last["state_dict"],
        "config": last["config"],
        "epoch": epoch,
        "metrics": best_metrics(row),
    }


def model_from_checkpoint(
    payload: dict,
    *,
    expect_model: str | None = None,
    expect_dataset: str | None = None,
    model: nn.Module | None = None,
    tta: bool = True,
) -> nn.Module:
    """Rebuild the model a payload describes and load its weights strictly.

    ``model``: an instance to load the weights into instead of building one from the registry;
    required for a run trained from the user's own class (model name ``custom:ClassName``), whose
    code a checkpoint never holds. A run trained with ``[model] tta_shift = N`` answers through
    :class:`ShiftTTA` (``tta=False``: the bare network, e.g. to draw its filters).
    """

    spec = payload["model"]
    if expect_model is not None and spec["name"] != expect_model:
        raise CheckpointError(_("checkpoint holds model {name!r}, but {expect_model!r} was asked for").format(name=spec['name'], expect_model=expect_model))
    data_name = payload.get("data", {}).get("name")
    if expect_dataset is not None and data_name != expect_dataset:
        raise CheckpointError(_("checkpoint was trained on dataset {data_name!r}, not {expect_dataset!r}").format(data_name=data_name, expect_dataset=expect_dataset))
    if model is None and is_custom(spec["name"]):
        cls = spec["name"][len(CUSTOM_PREFIX):]
        raise CheckpointError(
            _("this checkpoint holds the weights of your own model class {cls} (model {name!r}); a "
              "checkpoint never holds code, so pass an instance to load them into, from Python: "
              "cnnlab.load(RUN, model={cls}()) or cnnlab.interpret(RUN, model={cls}())").format(cls=cls, name=spec['name'])
        )
    given = model is not None
    if model is None:
        model = create_model(
            spec["name"], in_channels=spec["in_channels"], num_classes=spec["num_classes"], image_size=spec["image_size"]
        )
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        what = _("{cls} (the instance given)").format(cls=type(model).__name__) if given else repr(spec["name"])
        raise CheckpointError(
            _("checkpoint weights ({name!r}) do not fit model {what}: {reason}").format(name=spec['name'], what=what, reason=first_line(exc))
        ) from None
    shift = int((payload.get("config") or {}).get("model", {}).get("tta_shift", 0) or 0)
    return ShiftTTA(model, shift) if tta and shift else model




# --- RNG state as plain values (so last.pt stays weights_only-loadable) ---------------------


def capture_rng_state(*, cuda: bool = True) -> dict:
    """Every RNG a training run may draw from: torch CPU/CUDA, Python, NumPy (``cuda=False``: not CUDA's)."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _plain(random.getstate()),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype("int64")),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if cuda and torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _plain(value: Any) -> Any:
    # random.getstate() nests tuples; lists survive every serialiser unchanged.
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
