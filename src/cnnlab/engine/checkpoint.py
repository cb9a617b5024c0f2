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
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnlab import __version__
from cnnlab.core.errors import CheckpointError
from cnnlab.core.files import write_bytes
from cnnlab.models import create_model

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


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a cnnlab checkpoint with ``weights_only=True``; clear errors for everything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know: this is the code-execution guard.
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled Python objects, which could run code "
            "on this machine. cnnlab checkpoints hold only tensors and plain values; "
            "re-create the checkpoint with cnnlab, or load it yourself only if you trust its source."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupted ({_first_line(exc)}). "
            "Use another checkpoint (best.pt / last.pt) or retrain."
        ) from None
    if not isinstance(payload, dict) or "schema" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path} is not a cnnlab checkpoint (no schema/state_dict entries)")
    schema = payload["schema"]
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} was written with checkpoint schema {schema!r}, newer than this cnnlab "
            f"({__version__}, schema {SCHEMA_VERSION}) understands; upgrade cnnlab to load it"
        )
    return payload


CUSTOM_PREFIX = "custom:"  # model name of a run trained from a user's own nn.Module class


def is_custom_model(name: str) -> bool:
    return str(name).startswith(CUSTOM_PREFIX)


def model_from_checkpoint(
    payload: dict,
    *,
    expect_model: str | None = None,
    expect_dataset: str | None = None,
    model: nn.Module | None = None,
) -> nn.Module:
    """Rebuild the model a payload describes and load its weights strictly.

    ``model``: an instance to load the weights into instead of building one from the registry;
    required for a run trained from the user's own class (model name ``custom:ClassName``), whose
    code a checkpoint never holds.
    """

    spec = payload["model"]
    if expect_model is not None and spec["name"] != expect_model:
        raise CheckpointError(f"checkpoint holds model {spec['name']!r}, but {expect_model!r} was asked for")
    data_name = payload.get("data", {}).get("name")
    if expect_dataset is not None and data_name != expect_dataset:
        raise CheckpointError(f"checkpoint was trained on dataset {data_name!r}, not {expect_dataset!r}")
    if model is None and is_custom_model(spec["name"]):
        cls = spec["name"][len(CUSTOM_PREFIX):]
        raise CheckpointError(
            f"this checkpoint holds the weights of your own model class {cls} (model {spec['name']!r}); "
            f"a checkpoint never holds code, so pass an instance to load them into, from Python: "
            f"cnnlab.load(RUN, model={cls}()) or cnnlab.interpret(RUN, model={cls}())"
        )
    given = model is not None
    if model is None:
        model = create_model(
            spec["name"], in_channels=spec["in_channels"], num_classes=spec["num_classes"], image_size=spec["image_size"]
        )
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        what = f"{type(model).__name__} (the instance given)" if given else repr(spec["name"])
        raise CheckpointError(
            f"checkpoint weights ({spec['name']!r}) do not fit model {what}: {_first_line(exc)}"
        ) from None
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
