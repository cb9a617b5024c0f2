"""Predict on your own images with a trained model.

    predictor = cnnlab.load("runs/lenet5")         # a run directory or a .pt checkpoint
    [p] = predictor.predict(Image.open("seven.png"))
    p.labels, p.probs                                 # (['7', '1', '9'], [0.98, 0.01, 0.004])

Images are preprocessed exactly as the model's training data was made (the
recipe is stored in the checkpoint, see :mod:`cnnlab.data.images`) and run
through the network in batches. :meth:`Predictor.predict_files` works on files
and folders and collects one error per unusable file instead of stopping.
The command line (``cnnlab predict``), the server and export all use this one class.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from cnnlab.core.errors import CheckpointError, ImageError, RunDirError
from cnnlab.core.files import atomic_write, make_dirs, note_written, write_csv, write_json
from cnnlab.core.runs import RunDir
from cnnlab.core.runtime import available_cores, resolve_device
from cnnlab.data.images import (
    array_to_image,
    check_spec,
    decode_image,
    find_images,
    preprocess,
    tensor_to_image,
)
from cnnlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from cnnlab.inference import forward_batches

ImageLike = Any  # PIL image, numpy array, torch tensor, path, or bytes


@dataclass
class Prediction:
    """Top-k classes of one image, best first, and the tensor the network saw."""

    labels: list[str]
    probs: list[float]
    indices: list[int]
    input: torch.Tensor = field(repr=False)

    def __repr__(self) -> str:
        top = ", ".join(f"{name!r}: {p:.3f}" for name, p in zip(self.labels, self.probs))
        return f"Prediction({self.label!r}, {{{top}}})"

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def prob(self) -> float:
        return self.probs[0]

    def top_k(self) -> list[dict]:
        """``[{label, index, prob}]``, best first: the one shape of a top-k answer (``predict --json``,
        ``-o preds.json`` and the server's ``/api/predict``)."""
        return [{"label": str(lab), "index": int(i), "prob": float(p)}
                for lab, i, p in zip(self.labels, self.indices, self.probs)]


@dataclass
class FileResult:
    """The outcome for one input file: a prediction, or the reason it failed."""

    path: str
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FileResults:
    results: list[FileResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # non-image files met inside folders

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if not r.ok]

    def __repr__(self) -> str:
        return f"FileResults({len(self.results)} files, {len(self.failed)} failed, {len(self.skipped)} skipped)"

    def __iter__(self) -> Iterator[FileResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


class Predictor:
    """A trained model plus everything needed to feed it raw images.

    Attributes: ``model`` (eval mode), ``classes`` (names, by class index),
    ``spec`` (the stored preprocessing, completed with the image size and
    channels), ``model_info`` (the checkpoint's model entry plus dataset name,
    epoch, metrics and source), ``device``, ``batch_size``.
    """

    def __init__(
        self,
        model: nn.Module,
        classes: Sequence[str],
        spec: dict,
        model_info: dict | None = None,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.classes = [str(c) for c in classes]
        self.spec = dict(check_spec(spec))
        self.model_info = dict(model_info or {})
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return (f"Predictor(model={self.model_info.get('name', type(self.model).__name__)!r}, "
                f"classes={len(self.classes)}, style={self.spec.get('style')!r}, device={str(self.device)!r})")

    # --- single images -------------------------------------------------------------------

    def to_input(self, image: ImageLike, *, name: str | None = None) -> torch.Tensor:
        """One image of any supported kind -> the (C, H, W) tensor the network sees.

        * PIL images, paths and bytes are decoded and preprocessed as the training
          data was made.
        * numpy arrays and tensors are taken as pixels: (H, W), (H, W, C) or
          (C, H, W); integers in 0..255 or floats in 0..1, anything else is refused
          (:func:`cnnlab.data.images.pixels_to_uint8`). They go through the same
          preprocessing as files (for an MNIST digit tensor that is the identity).
          Inputs that are already preprocessed go to :meth:`predict_inputs` instead.
        """
        if isinstance(image, (np.ndarray, torch.Tensor)):
            image = array_to_image(image, name=name)
        img = decode_image(image, name=name)
        return preprocess(img, self.spec)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c = int(self.spec.get("channels", 1))
        s = int(self.spec.get("image_size", 28))
        return (c, s, s)

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Raw network outputs for a batch of preprocessed inputs (N, C, H, W), in batches."""
        if not len(inputs):
            return torch.empty(0, len(self.classes))
        return forward_batches(self.model, inputs.to(self.device, non_blocking=True), batch_size=self.batch_size)

    def predict(self, images: ImageLike | Iterable[ImageLike], top_k: int = 3) -> list[Prediction]:
        """Top-``top_k`` predictions for one image or a sequence of images.

        A single PIL image / path / array / tensor gives a one-element list. A
        4-D array or tensor (N, ...) is a batch. Raises
        :class:`~cnnlab.core.errors.ImageError` on the first unusable image; use
        :meth:`predict_files` to collect errors per file instead.
        """
        items = _as_list(images)
        inputs = [self.to_input(img, name=_name_of(img, i)) for i, img in enumerate(items)]
        return self.predict_inputs(torch.stack(inputs) if inputs else torch.empty(0, *self.input_shape), top_k)

    def predict_inputs(self, inputs: torch.Tensor, top_k: int = 3) -> list[Prediction]:
        """Top-k predictions for already-preprocessed inputs (N, C, H, W)."""
        k = max(1, min(int(top_k), len(self.classes)))
        if len(inputs) == 0:
            return []
        probs = torch.softmax(self.logits(inputs), dim=1)
        top_p, top_i = probs.topk(k, dim=1)
        return [
            Prediction(
                labels=[self.classes[j] for j in idx],
                probs=[float(p) for p in ps],
                indices=[int(j) for j in idx],
                input=inputs[n],
            )
            for n, (ps, idx) in enumerate(zip(top_p.tolist(), top_i.tolist()))
        ]

    # --- files and folders ---------------------------------------------------------------

    def predict_files(
        self,
        paths: Iterable[str | os.PathLike],
        top_k: int = 3,
        *,
        save_preprocessed: str | os.PathLike | None = None,
        workers: int | None = None,
        chunk: int | None = None,
        on_result: Callable[[FileResult], None] | None = None,
    ) -> FileResults:
        """Predict every image file in ``paths`` (folders searched recursively).

        Unusable files do not stop the run: each gets a :class:`FileResult` with
        ``error`` naming the file and the reason. Files are decoded and
        preprocessed by ``workers`` threads (PIL releases the GIL while
        decoding) and run through the network ``chunk`` at a time.
        ``save_preprocessed`` writes each network input as a PNG there.
        ``on_result`` is called for every file, in input order, as soon as known.
        """
        found = find_images(paths)
        out = FileResults(skipped=found.skipped)
        workers = workers or min(4, available_cores())
        chunk = chunk or max(self.batch_size, 64)
        save_dir = Path(save_preprocessed) if save_preprocessed else None
        saved_names: set[str] = set()

        def load_one(path: str) -> torch.Tensor | str:
            try:
                return self.to_input(Path(path), name=path)
            except ImageError as exc:
                return str(exc)
            except Exception as exc:  # noqa: BLE001 - one odd file must not end a run over thousands
                return f"{path}: unexpected error while reading the image ({type(exc).__name__}: {exc})"

        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        try:
            files = found.files
            for start in range(0, len(files), chunk):
                part = files[start : start + chunk]
                loaded = list(pool.map(load_one, part)) if pool else [load_one(p) for p in part]
                good = [(p, x) for p, x in zip(part, loaded) if isinstance(x, torch.Tensor)]
                preds = iter(self.predict_inputs(torch.stack([x for _, x in good]), top_k) if good else [])
                for path, x in zip(part, loaded):
                    if isinstance(x, str):
                        r = FileResult(path, error=_strip_label(x, path))
                    else:
                        r = FileResult(path, prediction=next(preds))
                        if save_dir is not None:
                            _save_input(save_dir, path, r.prediction.input, self.spec, saved_names)
                    out.results.append(r)
                    if on_result:
                        on_result(r)
        finally:
            if pool:
                pool.shutdown()
        return out


# --- loading -------------------------------------------------------------------------------


def load(
    run_dir_or_checkpoint: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 256,
) -> Predictor:
    """A :class:`Predictor` from a run directory (its ``best.pt``) or a checkpoint file.

    Registry models are rebuilt by name. A run of your own ``nn.Module`` class needs ``model=``, a
    fresh instance of it: the weights are loaded into it (``torch.load(weights_only=True)``: a
    checkpoint never holds or runs code). ``predictor.model`` is the model, in eval mode.
    """

    path = Path(run_dir_or_checkpoint)
    if path.is_dir():
        ckpt = RunDir(path).best
        if not ckpt.is_file():
            raise RunDirError(f"{path} holds no best.pt; give a cnnlab run directory or a checkpoint file")
    elif path.is_file():
        ckpt = path
    else:
        raise RunDirError(f"{path} does not exist (expected a run directory or a .pt checkpoint)")
    payload = load_checkpoint(ckpt)
    data = payload.get("data") or {}
    classes = data.get("classes")
    if not classes:
        raise CheckpointError(f"{ckpt} does not record its class names (data.classes)")
    model_entry = payload.get("model") or {}
    if len(classes) != model_entry.get("num_classes", len(classes)):
        raise CheckpointError(f"{ckpt}: {len(classes)} class names for a model with {model_entry['num_classes']} outputs")
    try:
        spec = stored_spec(payload)
    except ImageError as exc:
        raise CheckpointError(f"{ckpt}: {exc}") from None
    model = model_from_checkpoint(payload, model=model)
    info = {
        **model_entry,
        "dataset": data.get("name"),
        "epoch": payload.get("epoch"),
        "metrics": payload.get("metrics", {}),
        "checkpoint": str(ckpt),
        "cnnlab_version": payload.get("cnnlab_version"),
    }
    dev = resolve_device(str(device)) if isinstance(device, str) else device
    return Predictor(model, classes, spec, info, device=dev, batch_size=batch_size)


def stored_spec(payload: dict) -> dict:
    """The checkpoint's preprocessing spec, completed with its image size and channels."""
    data = payload.get("data") or {}
    spec = check_spec(data.get("preprocess"))
    spec = dict(spec)
    model = payload.get("model") or {}
    spec.setdefault("image_size", int(spec.get("size") or data.get("image_size", model.get("image_size", 28))))
    spec.setdefault("channels", int(data.get("channels", model.get("in_channels", 1))))
    return spec


def _as_list(images: Any) -> list:
    if isinstance(images, (Image.Image, str, bytes, bytearray, os.PathLike)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


def _name_of(img: Any, i: int) -> str:
    if isinstance(img, (str, os.PathLike)):
        return str(img)
    return getattr(img, "filename", None) or f"image {i}"


def _strip_label(message: str, path: str) -> str:
    # ImageError messages start with "<path>: "; the file result keeps the path separately.
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _save_input(folder: Path, path: str, x: torch.Tensor, spec: dict, used: set[str]) -> None:

    stem = Path(path).stem or "image"
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    make_dirs(folder)
    note_written(folder, name)  # first: a later --overwrite may remove it, and only what is listed
    with atomic_write(folder / name, "wb") as fh:
        tensor_to_image(x, spec).save(fh, format="PNG")


# --- reporting -----------------------------------------------------------------------------


def result_rows(results: Iterable[FileResult], top_k: int) -> tuple[list[str], list[list[Any]]]:
    """CSV header and rows: path, label_1, prob_1, ..., label_k, prob_k, error."""
    header = ["path"]
    for i in range(1, top_k + 1):
        header += [f"label_{i}", f"prob_{i}"]
    header.append("error")
    rows = []
    for r in results:
        row: list[Any] = [r.path]
        p = r.prediction
        for i in range(top_k):
            if p is not None and i < len(p.labels):
                row += [p.labels[i], f"{p.probs[i]:.6f}"]
            else:
                row += ["", ""]
        row.append(r.error or "")
        rows.append(row)
    return header, rows


def results_json(results: Iterable[FileResult], predictor: Predictor, top_k: int) -> dict:
    return {
        "model": predictor.model_info.get("checkpoint"),
        "classes": predictor.classes,
        "top_k": top_k,
        "results": [
            {
                "path": r.path,
                "label": r.prediction.label if r.prediction else None,
                "prob": round(r.prediction.prob, 6) if r.prediction else None,
                "top_k": [{**c, "prob": round(c["prob"], 6)} for c in r.prediction.top_k()] if r.prediction else None,
                "error": r.error,
            }
            for r in results
        ],
    }


def output_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``csv`` or ``json``: ``fmt`` when given, else from the file name (default csv)."""
    if fmt:
        return fmt
    return "json" if Path(path).suffix.lower() == ".json" else "csv"


def write_results(
    results: FileResults, path: str | os.PathLike, predictor: Predictor, top_k: int, fmt: str | None = None
) -> None:
    """Write predictions (and per-file errors) as CSV or JSON, atomically."""

    if output_format(path, fmt) == "json":
        write_json(path, results_json(results, predictor, top_k))
    else:
        header, rows = result_rows(results, top_k)
        write_csv(path, header, rows)
