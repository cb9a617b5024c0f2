"""Ship a trained model: ONNX or a torch.export program, checked against PyTorch before it is written.

Every export takes a float32 batch ``input`` of shape (N, C, H, W) with any N
(a dynamic batch dimension), already preprocessed exactly as
:func:`cnnlab.data.images.preprocess` does, and returns ``logits`` (N, classes);
softmax gives probabilities.

* ``onnx``: PyTorch's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``,
  which needs ``onnxscript``), opset :data:`ONNX_OPSET`. Metadata is stored in the
  model's ``metadata_props``: ``cnnlab`` (everything, as JSON), ``classes`` (JSON
  list) and ``preprocess`` (JSON). Load it with ``onnxruntime.InferenceSession(path)``.
* ``pt2``: ``torch.export``'s ExportedProgram, PyTorch's own format, saved by
  ``torch.export.save`` with an extra file ``cnnlab.json`` holding the same metadata.
  Load it with ``ep = torch.export.load(path, extra_files={"cnnlab.json": ""})`` and
  call ``ep.module()(x)``.
* ``torchscript``: ``torch.jit.trace``, deprecated by PyTorch (its warning is shown, not
  hidden), for LibTorch (C++) users. ``torch.jit.load(path,
  _extra_files={"cnnlab.json": ""})``.

Before writing, the exported bytes are loaded back (ONNX with onnxruntime when
installed, else ``onnx.reference.ReferenceEvaluator``), run on real inputs (the
model's test images, or ``verify_images``) at batch size 1 and in larger
batches, and compared with the PyTorch model; the largest differences are
reported and an export that disagrees is refused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from cnnlab import __version__
from cnnlab.core.config import EXPORT_FORMATS
from cnnlab.core.errors import CnnlabError, ConfigError, DataError, ExportError, first_line
from cnnlab.core.files import STDOUT, check_output_free, write_bytes
from cnnlab.core.i18n import N_, _
from cnnlab.core.runs import reading
from cnnlab.data.registry import load_dataset
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.service.predictor import load

ONNX_OPSET = 18  # the dynamo exporter's own; lower opsets go through onnx's version converter
FORMATS = EXPORT_FORMATS
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt"}
#: Largest accepted |exported - pytorch| logit difference, relative to the logits' scale.
RTOL = 1e-4
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass
class Verification:
    """How the exported model compares with PyTorch on the same inputs."""

    runtime: str
    inputs: str
    num_inputs: int
    batch_sizes: list[int]
    max_abs_logit_diff: float
    max_abs_prob_diff: float
    top1_agree: int
    logit_scale: float

    @property
    def ok(self) -> bool:
        return self.top1_agree == self.num_inputs and self.max_abs_logit_diff <= RTOL * max(1.0, self.logit_scale)


@dataclass
class ExportResult:
    path: Path
    format: str
    metadata: dict
    verification: Verification
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """What ``cnnlab export --json`` prints: the file, its metadata and the check against PyTorch."""
        return {"path": str(self.path), "format": self.format, "size_bytes": self.size_bytes,
                "metadata": self.metadata, "verification": {**dataclasses.asdict(self.verification),
                                                            "ok": self.verification.ok},
                "notes": list(self.notes)}

    def summary(self) -> str:
        v = self.verification
        opset = _(", opset {opset}").format(opset=self.metadata['onnx_opset']) if self.format == "onnx" else ""
        lines = [
            _("exported {format}{opset} to {path} ({kib:.0f} KiB); input {input} [{shape}] float32 -> "
              "{output} [N, {classes}]").format(
                format=self.format, opset=opset, path=self.path, kib=self.size_bytes / 1024,
                input=self.metadata['input']['name'], shape=', '.join(map(str, self.metadata['input']['shape'])),
                output=self.metadata['output']['name'], classes=len(self.metadata['classes'])),
            # v.inputs is stored in English (the JSON result is for programs): translated when shown.
            _("verified with {runtime} on {n} {inputs} (batch sizes {sizes}): largest |logit difference| "
              "{logit:.3g}, largest |probability difference| {prob:.3g}, top-1 agrees on {agree}/{n}").format(
                runtime=v.runtime, n=v.num_inputs, inputs=_(v.inputs), sizes=', '.join(map(str, v.batch_sizes)),
                logit=v.max_abs_logit_diff, prob=v.max_abs_prob_diff, agree=v.top1_agree),
        ]
        lines += self.notes
        return "\n".join(lines)


def default_output(source: Path, fmt: str) -> Path:
    """``RUN_DIR/model.onnx`` for a run directory, ``CHECKPOINT_STEM.onnx`` next to a checkpoint file."""
    if source.is_dir():
        return source / f"model{SUFFIX[fmt]}"
    return source.with_name(source.name.removesuffix(".pt") + SUFFIX[fmt])


def export_model(
    source: str | os.PathLike,
    fmt: str = "onnx",
    output: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    opset: int | None = None,
    verify_images: Sequence[str | os.PathLike] | None = None,
    data_dir: str | os.PathLike | None = None,
    verify_count: int = 1000,
) -> ExportResult:
    """Export the model of a run directory or checkpoint; verify; write atomically.

    The output is never replaced unless ``overwrite``. Raises :class:`ExportError`
    when the export fails or disagrees with PyTorch (nothing is written then).
    """

    if fmt not in FORMATS:
        raise ConfigError(_("unknown export format {fmt!r}; choose {formats}").format(fmt=fmt, formats=' or '.join(FORMATS)))
    src = Path(source)
    out = Path(output) if output else default_output(src, fmt)
    if str(out) != STDOUT:
        check_output_free(out, overwrite)
    opset = opset or ONNX_OPSET
    # A run's export is of the best.pt beside it: not while a training run may replace that file.
    with (reading(src) if src.is_dir() else contextlib.nullcontext()):
        return _export(src, fmt, out, opset, verify_images, data_dir, verify_count)


def _export(src: Path, fmt: str, out: Path, opset: int, verify_images: Sequence[str | os.PathLike] | None,
            data_dir: str | os.PathLike | None, verify_count: int) -> ExportResult:
    predictor = load(src, device="cpu")
    model = predictor.model.eval()
    metadata = build_metadata(predictor, fmt, opset)
    inputs, described, notes = verification_inputs(predictor, verify_images, data_dir, verify_count)

    # A copy: a slice would keep the whole verification set alive in the .pt2's sample inputs (3 MB, not 25 KB).
    example = inputs[: min(len(inputs), 8)].clone()
    if len(example) == 1:  # torch.export would specialise a batch of one to N == 1
        example = example.repeat(2, 1, 1, 1)
    if fmt == "onnx":
        data = to_onnx(model, example, metadata, opset)
        runner, runtime = onnx_runner(data)
    elif fmt == "pt2":
        data = to_pt2(model, example, metadata)
        runner, runtime = pt2_runner(data)
    else:
        notes.append(_("note: TorchScript is deprecated by PyTorch; --format pt2 (torch.export) is its successor"))
        data = to_torchscript(model, example, metadata)
        runner, runtime = torchscript_runner(data)

    verification = compare(model, runner, inputs, runtime=runtime, described=described)
    if not verification.ok:
        raise ExportError(
            _("the {fmt} export does not reproduce PyTorch: largest |logit difference| "
              "{max_abs_logit_diff:.3g}, top-1 agrees on {top1_agree}/{num_inputs} inputs; nothing was "
              "written").format(fmt=fmt, max_abs_logit_diff=verification.max_abs_logit_diff, top1_agree=verification.top1_agree, num_inputs=verification.num_inputs)
        )
    write_bytes(out, data)
    return ExportResult(out, fmt, metadata, verification, len(data), notes)


def build_metadata(predictor: Any, fmt: str, opset: int) -> dict:
    c, h, w = predictor.input_shape
    info = predictor.model_info
    meta = {
        "producer": f"cnnlab {__version__}",
        "format": fmt,
        "model": {k: info.get(k) for k in ("name", "in_channels", "num_classes", "image_size")},
        "dataset": info.get("dataset"),
        "classes": list(predictor.classes),
        "preprocess": dict(predictor.spec),
        "input": {"name": INPUT_NAME, "shape": ["N", c, h, w], "dtype": "float32",
                  "note": "preprocessed as cnnlab.data.images.preprocess(image, preprocess) does"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", len(predictor.classes)],
                   "note": "logits; softmax gives class probabilities, in the order of classes"},
        "epoch": info.get("epoch"),
        "metrics": info.get("metrics"),
        "torch_version": str(torch.__version__),
    }
    if fmt == "onnx":
        meta["onnx_opset"] = opset
    return meta


# --- inputs to compare on --------------------------------------------------------------------


def verification_inputs(
    predictor: Any,
    verify_images: Sequence[str | os.PathLike] | None,
    data_dir: str | os.PathLike | None,
    count: int,
) -> tuple[torch.Tensor, str, list[str]]:
    """Real inputs, preprocessed as prediction does: given images, else the dataset's test images.

    Random inputs are used only when neither is available, and the result says so.
    """
    notes: list[str] = []
    if verify_images:
        results = predictor.predict_files(verify_images, top_k=1)
        good = [r.prediction.input for r in results if r.ok]
        for r in results.failed:
            notes.append(_("note: skipped {path} for verification: {error}").format(path=r.path, error=r.error))
        if not good:
            raise ExportError(_("none of the --verify-images could be used; see the notes above") if notes
                              else _("--verify-images named no image files"))
        return torch.stack(good[:count]), N_("of your images"), notes

    test = _test_images(predictor, data_dir, count)
    if test is not None:
        # The very path `cnnlab predict` takes: uint8 pixels -> PIL -> stored preprocessing.
        inputs = torch.stack([predictor.to_input(img) for img in test])
        return inputs, f"{predictor.model_info.get('dataset')} test images", notes
    g = torch.Generator().manual_seed(0)
    notes.append(_("note: the dataset's test images were not found (give --data-dir or --verify-images); "
                   "compared on random inputs instead"))
    return torch.rand((min(count, 256), *predictor.input_shape), generator=g), N_("random inputs"), notes


def _test_images(predictor: Any, data_dir: str | os.PathLike | None, count: int) -> torch.Tensor | None:

    dataset = predictor.model_info.get("dataset")
    if data_dir is None:
        try:
            payload = load_checkpoint(predictor.model_info["checkpoint"])
            data_dir = ((payload.get("config") or {}).get("data") or {}).get("data_dir")
        except CnnlabError:
            data_dir = None
    try:
        _train, test, _val = load_dataset(dataset, data_dir, download=False)
    except (CnnlabError, OSError, RuntimeError, ValueError):
        return None
    return test.images[:count]


# --- exporters -------------------------------------------------------------------------------


def _dynamic_shapes() -> tuple:
    """Dimension 0 (the batch) symbolic, by position: the models' forward takes one tensor."""
    return ({0: torch.export.Dim("N", min=1, max=1 << 20)},)


Runner = Callable[[np.ndarray], np.ndarray]


def to_onnx(model: nn.Module, example: torch.Tensor, metadata: dict, opset: int) -> bytes:
    """ONNX bytes from the dynamo exporter, with a dynamic batch dimension and the metadata in ``metadata_props``."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; say so before it fails deep inside)
    except ImportError:
        raise ExportError(_("ONNX export needs onnx and onnxscript: pip install 'cnnlab[export]' (or: pip install onnx "
                            "onnxscript onnxruntime)")) from None
    try:
        # The exporter reports its steps with print(); keep stdout for the data (`-o -`).
        with contextlib.redirect_stdout(sys.stderr):
            program = torch.onnx.export(
                model, (example,), None, dynamo=True, opset_version=opset, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=_dynamic_shapes(),
            )
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise ExportError(_("torch.onnx.export failed (opset {opset}): {reason}").format(opset=opset, reason=first_line(exc))) from None
    proto = program.model_proto
    proto.producer_name, proto.producer_version = "cnnlab", __version__
    proto.doc_string = (f"{metadata['model']['name']} trained on {metadata['dataset']}; input {INPUT_NAME} "
                        f"{metadata['input']['shape']} float32, preprocessed per metadata 'preprocess'; "
                        f"output {OUTPUT_NAME} (softmax for probabilities)")
    props = {"cnnlab": json.dumps(metadata), "classes": json.dumps(metadata["classes"]),
             "preprocess": json.dumps(metadata["preprocess"])}
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def to_pt2(model: nn.Module, example: torch.Tensor, metadata: dict) -> bytes:
    """A ``torch.export`` ExportedProgram (dynamic batch) saved with ``cnnlab.json`` as an extra file."""
    buf = io.BytesIO()
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_shapes())
        torch.export.save(program, buf, extra_files={"cnnlab.json": json.dumps(metadata)})
    except Exception as exc:
        raise ExportError(_("torch.export failed: {reason}").format(reason=first_line(exc))) from None
    return buf.getvalue()


def pt2_runner(data: bytes) -> tuple[Runner, str]:
    module = torch.export.load(io.BytesIO(data)).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run, f"torch.export.load (torch {torch.__version__})"


def to_torchscript(model: nn.Module, example: torch.Tensor, metadata: dict) -> bytes:
    """A traced TorchScript module with ``cnnlab.json`` as an extra file (deprecated by PyTorch: its warning shows)."""
    buf = io.BytesIO()
    try:
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, buf, _extra_files={"cnnlab.json": json.dumps(metadata)})
    except Exception as exc:
        raise ExportError(_("torch.jit.trace failed: {reason}").format(reason=first_line(exc))) from None
    return buf.getvalue()


def onnx_runner(data: bytes) -> tuple[Runner, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(onnx.load_from_string(data))
        return (lambda x: ref.run(None, {INPUT_NAME: x})[0]), f"onnx {onnx.__version__} reference evaluator"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    return (lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]), f"onnxruntime {ort.__version__}"


def torchscript_runner(data: bytes) -> tuple[Runner, str]:
    module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run, f"torch.jit.load (torch {torch.__version__})"


def compare(model: nn.Module, runner: Runner, inputs: torch.Tensor, *, runtime: str, described: str,
            batch: int = 256) -> Verification:
    """Run both on ``inputs``: the first few one by one (batch size 1), the rest in batches."""
    model.eval()
    with torch.no_grad():
        expected = torch.cat([model(inputs[i : i + batch]) for i in range(0, len(inputs), batch)]).float()
    singles = min(4, len(inputs))
    chunks = [inputs[i : i + 1] for i in range(singles)]
    chunks += [inputs[i : i + batch] for i in range(singles, len(inputs), batch)]
    try:
        got = torch.cat([torch.from_numpy(np.asarray(runner(c.numpy().astype(np.float32)))) for c in chunks]).float()
    except Exception as exc:
        raise ExportError(_("the exported model failed to run in {runtime}: {reason}").format(runtime=runtime, reason=first_line(exc))) from None
    if got.shape != expected.shape:
        raise ExportError(_("the exported model returned shape {shape}, PyTorch {expected}").format(shape=tuple(got.shape), expected=tuple(expected.shape)))
    diff = (got - expected).abs()
    prob_diff = (torch.softmax(got, 1) - torch.softmax(expected, 1)).abs()
    sizes = sorted({len(c) for c in chunks})
    return Verification(
        runtime=runtime,
        inputs=described,
        num_inputs=len(inputs),
        batch_sizes=sizes,
        max_abs_logit_diff=float(diff.max()) if diff.numel() else 0.0,
        max_abs_prob_diff=float(prob_diff.max()) if prob_diff.numel() else 0.0,
        top1_agree=int((got.argmax(1) == expected.argmax(1)).sum()),
        logit_scale=float(expected.abs().max()) if expected.numel() else 1.0,
    )


def read_metadata(path: str | os.PathLike) -> dict:
    """The cnnlab metadata stored in an exported ``.onnx``, ``.pt2`` or TorchScript file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(_("{p} does not exist").format(p=p))
    extra = {"cnnlab.json": ""}
    if p.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(p), load_external_data=False)
        props = {e.key: e.value for e in proto.metadata_props}
        extra["cnnlab.json"] = props.get("cnnlab", "")
    elif p.suffix == ".pt2":
        torch.export.load(str(p), extra_files=extra)
    else:
        torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    if not extra["cnnlab.json"]:
        raise DataError(_("{p} carries no cnnlab metadata").format(p=p))
    return json.loads(extra["cnnlab.json"])


