"""Export round trips: TorchScript and ONNX reproduce PyTorch, carry metadata, take any batch size."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

from cnnlab.apps.cli import cli
from cnnlab.core.errors import ExportError, SaveError
from cnnlab.apps.export import ONNX_OPSET, export_model, read_metadata
from cnnlab.apps.predict import load


def jit_load(path: Path):
    extra = {"cnnlab.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["cnnlab.json"])


def batches(predictor, sizes=(1, 7)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand((n, *predictor.input_shape), generator=g) for n in sizes]


def test_torchscript_round_trip(tiny_trained_run, tmp_path):
    out = tmp_path / "model.torchscript.pt"
    result = export_model(tiny_trained_run, "torchscript", out)
    assert result.path == out and out.is_file()
    v = result.verification
    # Compared on the dataset's real test images (the tiny run's data folder), at batch size 1 and in batches.
    assert v.inputs == "mnist test images" and v.num_inputs == 200 and 1 in v.batch_sizes and max(v.batch_sizes) > 1
    assert v.ok and v.top1_agree == 200 and v.max_abs_logit_diff < 1e-4
    assert "largest |logit difference|" in result.summary()

    module, meta = jit_load(out)
    predictor = load(tiny_trained_run)
    assert meta["classes"] == predictor.classes and meta["preprocess"] == predictor.spec
    assert meta["input"]["shape"] == ["N", 1, 28, 28] and meta["model"]["name"] == "lenet5"
    assert read_metadata(out) == meta
    for x in batches(predictor):
        with torch.no_grad():
            assert torch.allclose(module(x), predictor.model(x), atol=1e-5)


def test_onnx_round_trip_with_dynamic_batch_and_metadata(tiny_trained_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    result = export_model(tiny_trained_run, "onnx")  # default name: RUN_DIR/model.onnx
    out = tiny_trained_run / "model.onnx"
    try:
        assert result.path == out and result.verification.ok
        proto = onnx.load(str(out))
        onnx.checker.check_model(proto)
        assert [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")] == [ONNX_OPSET]
        (inp,) = proto.graph.input
        dims = inp.type.tensor_type.shape.dim
        assert inp.name == "input" and dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 28, 28]
        props = {p.key: p.value for p in proto.metadata_props}
        predictor = load(tiny_trained_run)
        assert json.loads(props["classes"]) == predictor.classes
        assert json.loads(props["preprocess"]) == predictor.spec
        assert read_metadata(out)["onnx_opset"] == ONNX_OPSET

        try:
            import onnxruntime as ort
        except ImportError:
            from onnx.reference import ReferenceEvaluator

            ref = ReferenceEvaluator(proto)
            run = lambda x: ref.run(None, {"input": x})[0]  # noqa: E731
        else:
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            run = lambda x: session.run(None, {"input": x})[0]  # noqa: E731
        for x in batches(predictor, (1, 7, 64)):
            with torch.no_grad():
                expected = predictor.model(x).numpy()
            got = run(x.numpy())
            assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-4)
    finally:
        out.unlink(missing_ok=True)


def test_export_never_overwrites_without_overwrite(tiny_trained_run, tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    with pytest.raises(SaveError, match="already exists; pass --overwrite"):
        export_model(tiny_trained_run, "torchscript", out)
    assert out.read_bytes() == b"precious"
    export_model(tiny_trained_run, "torchscript", out, overwrite=True)
    assert out.read_bytes() != b"precious"


def test_an_export_that_disagrees_is_refused_and_not_written(tiny_trained_run, tmp_path, monkeypatch):
    import cnnlab.apps.export as ex

    real = ex.torchscript_runner

    def drifting(data):
        run, name = real(data)
        return (lambda x: run(x) + 0.5), name

    monkeypatch.setattr(ex, "torchscript_runner", drifting)
    out = tmp_path / "bad.pt"
    with pytest.raises(ExportError, match="does not reproduce PyTorch"):
        export_model(tiny_trained_run, "torchscript", out)
    assert not out.exists()


def test_verify_on_your_images_and_fallback_to_random(tiny_trained_run, tmp_path):
    img = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(img).line([(10, 10), (50, 10), (25, 50)], fill=0, width=5)
    img.save(tmp_path / "seven.png")
    (tmp_path / "broken.png").write_bytes(b"nope")
    r = export_model(tiny_trained_run, "torchscript", tmp_path / "a.pt",
                     verify_images=[tmp_path / "seven.png", tmp_path / "broken.png"])
    assert r.verification.inputs == "of your images" and r.verification.num_inputs == 1
    assert any("broken.png" in n for n in r.notes)
    empty = tmp_path / "nodata"
    empty.mkdir()
    r = export_model(tiny_trained_run, "torchscript", tmp_path / "b.pt", data_dir=empty)
    assert r.verification.inputs == "random inputs" and any("not found" in n for n in r.notes)


def test_cli_export(tiny_trained_run, tmp_path):
    out = tmp_path / "cli.pt"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(tiny_trained_run), "--format", "torchscript", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported torchscript" in result.output and "top-1 agrees on 200/200" in result.output
    result = runner.invoke(cli, ["export", str(tiny_trained_run), "--format", "torchscript", "-o", str(out)])
    assert result.exit_code != 0 and "already exists" in result.output
    result = runner.invoke(cli, ["export", str(tmp_path / "missing-run")])
    assert result.exit_code == 2 and "does not exist" in result.output
