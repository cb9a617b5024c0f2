"""Export round trips: ONNX (dynamo), torch.export .pt2 and TorchScript reproduce PyTorch, carry metadata,
take any batch size, and the export path raises no deprecation warning."""
from __future__ import annotations

import json
import subprocess
import sys
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
from cnnlab.service.predictor import load


def jit_load(path: Path):
    extra = {"cnnlab.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["cnnlab.json"])


def batches(predictor, sizes=(1, 7)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand((n, *predictor.input_shape), generator=g) for n in sizes]


def test_pt2_round_trip(tiny_trained_run, tmp_path):
    out = tmp_path / "model.pt2"
    result = export_model(tiny_trained_run, "pt2", out)
    assert result.path == out and out.is_file()
    assert out.stat().st_size < 400_000  # LeNet-5's weights (~250 KB) and 8 sample inputs, not all 200 test images
    v = result.verification
    # Compared on the dataset's real test images (the tiny run's data folder), at batch size 1 and in batches.
    assert v.inputs == "mnist test images" and v.num_inputs == 200 and 1 in v.batch_sizes and max(v.batch_sizes) > 1
    assert v.ok and v.top1_agree == 200 and v.max_abs_logit_diff < 1e-4 and v.runtime.startswith("torch.export.load")
    assert "largest |logit difference|" in result.summary() and result.summary().startswith("exported pt2 to")

    extra = {"cnnlab.json": ""}  # how a user loads it (docs/cli.md)
    program = torch.export.load(str(out), extra_files=extra)
    meta = json.loads(extra["cnnlab.json"])
    predictor = load(tiny_trained_run)
    assert meta["classes"] == predictor.classes and meta["preprocess"] == predictor.spec and meta["format"] == "pt2"
    assert meta["input"]["shape"] == ["N", 1, 28, 28] and meta["model"]["name"] == "lenet5"
    assert read_metadata(out) == meta
    module = program.module()
    for x in batches(predictor, (1, 7, 300)):
        with torch.no_grad():
            assert torch.allclose(module(x), predictor.model(x), atol=1e-5)


def test_torchscript_still_exports_and_says_it_is_deprecated(tiny_trained_run, tmp_path):
    out = tmp_path / "model.torchscript.pt"
    with pytest.warns(FutureWarning, match="torch.jit.trace. is deprecated"):  # PyTorch's warning, not hidden
        result = export_model(tiny_trained_run, "torchscript", out)
    assert result.verification.ok and any("--format pt2" in n for n in result.notes)
    module, meta = jit_load(out)
    predictor = load(tiny_trained_run)
    assert meta["classes"] == predictor.classes and read_metadata(out) == meta
    for x in batches(predictor):
        with torch.no_grad():
            assert torch.allclose(module(x), predictor.model(x), atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_raises_no_deprecation_warning(fmt, tiny_trained_run, tmp_path):
    """Nothing on the export path is deprecated in this PyTorch, and nothing is hidden."""
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model(tiny_trained_run, fmt, tmp_path / f"m.{fmt}")
    bad = [w for w in caught if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))]
    assert not bad, [f"{w.category.__name__}: {w.message}" for w in bad]


def test_export_module_has_no_warning_filters():
    source = (Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "apps" / "export.py").read_text()
    assert "catch_warnings" not in source and "simplefilter" not in source and "dynamo=False" not in source


def test_cli_export_under_error_on_deprecation(tiny_trained_run, tmp_path):
    out = tmp_path / "w.onnx"
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-m", "cnnlab", "export",
                           str(tiny_trained_run), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "exported onnx, opset 18" in proc.stdout and out.is_file()


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
    out = tmp_path / "m.pt2"
    out.write_bytes(b"precious")
    with pytest.raises(SaveError, match="already exists; pass --overwrite"):
        export_model(tiny_trained_run, "pt2", out)
    assert out.read_bytes() == b"precious"
    export_model(tiny_trained_run, "pt2", out, overwrite=True)
    assert out.read_bytes() != b"precious"


def test_an_export_that_disagrees_is_refused_and_not_written(tiny_trained_run, tmp_path, monkeypatch):
    import cnnlab.apps.export as ex

    real = ex.pt2_runner

    def drifting(data):
        run, name = real(data)
        return (lambda x: run(x) + 0.5), name

    monkeypatch.setattr(ex, "pt2_runner", drifting)
    out = tmp_path / "bad.pt2"
    with pytest.raises(ExportError, match="does not reproduce PyTorch"):
        export_model(tiny_trained_run, "pt2", out)
    assert not out.exists()


def test_verify_on_your_images_and_fallback_to_random(tiny_trained_run, tmp_path):
    img = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(img).line([(10, 10), (50, 10), (25, 50)], fill=0, width=5)
    img.save(tmp_path / "seven.png")
    (tmp_path / "broken.png").write_bytes(b"nope")
    r = export_model(tiny_trained_run, "pt2", tmp_path / "a.pt2",
                     verify_images=[tmp_path / "seven.png", tmp_path / "broken.png"])
    assert r.verification.inputs == "of your images" and r.verification.num_inputs == 1
    assert any("broken.png" in n for n in r.notes)
    empty = tmp_path / "nodata"
    empty.mkdir()
    r = export_model(tiny_trained_run, "pt2", tmp_path / "b.pt2", data_dir=empty)
    assert r.verification.inputs == "random inputs" and any("not found" in n for n in r.notes)


def test_cli_export(tiny_trained_run, tmp_path):
    out = tmp_path / "cli.pt2"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(tiny_trained_run), "--format", "pt2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported pt2" in result.output and "top-1 agrees on 200/200" in result.output
    result = runner.invoke(cli, ["export", str(tiny_trained_run), "--format", "pt2", "-o", str(out)])
    assert result.exit_code != 0 and "already exists" in result.output
    result = runner.invoke(cli, ["export", str(tmp_path / "missing-run")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_export_to_stdout(tiny_trained_run, tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["export", str(tiny_trained_run), "-o", "-"])
    assert result.exit_code == 0, result.output
    proto = onnx.load_from_string(result.stdout_bytes)  # the model, and nothing else, on stdout
    assert {p.key for p in proto.metadata_props} == {"cnnlab", "classes", "preprocess"}
    assert "exported onnx" in result.stderr and list(tmp_path.iterdir()) == []
