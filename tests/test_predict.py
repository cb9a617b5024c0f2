"""Prediction: the Python API, files and folders, bad inputs, and `cnnlab predict`."""
from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

import cnnlab
from cnnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.apps.cli import cli
from cnnlab.core.errors import CheckpointError, ImageError, RunDirError
from cnnlab.data.images import find_images
from cnnlab.service.predictor import Prediction, Predictor, load

from conftest import real_mnist_dir, requires_real_mnist


def digit(seed: int = 0, size: int = 120) -> Image.Image:
    """A dark-on-light scribble, different per seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (size, size), 255)
    pts = [tuple(int(v) for v in rng.integers(10, size - 10, 2)) for _ in range(4)]
    ImageDraw.Draw(img).line(pts, fill=0, width=max(3, size // 20))
    return img


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def bomb_header(width: int = 9000, height: int = 9000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def predictor(tiny_trained_run: Path) -> Predictor:
    return load(tiny_trained_run)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three good images (PNG, JPEG without extension, RGBA in a subfolder) and every bad case."""
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    digit(1).save(root / "a.png")
    (root / "b_no_extension").write_bytes(png_bytes(digit(2).convert("RGB"), "JPEG"))
    rgba = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse([20, 10, 60, 70], outline=(0, 0, 0, 255), width=6)
    rgba.save(root / "sub" / "c.png")
    good = png_bytes(digit(3))
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not really a picture\n")
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "bomb.png").write_bytes(bomb_header())
    (root / "notes.txt").write_text("a README in the scans folder: skipped, not an error\n")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


BAD = {"empty.png": "empty", "text.png": "not an image", "truncated.png": "truncated", "bomb.png": "megapixels"}


# --- the Python API ------------------------------------------------------------------------


def test_load_gives_classes_spec_and_model_info(tiny_trained_run, predictor):
    assert predictor.classes == [str(i) for i in range(10)]
    assert predictor.spec == {"style": "mnist", "scale": 255.0, "image_size": 28, "channels": 1}
    assert predictor.model_info["name"] == "lenet5" and predictor.model_info["dataset"] == "mnist"
    assert not predictor.model.training
    # cnnlab.load is the same function, reached lazily; a checkpoint file works as well as a run dir.
    assert cnnlab.load is load
    from_file = cnnlab.load(tiny_trained_run / "best.pt")
    assert from_file.model_info["checkpoint"].endswith("best.pt")


def test_import_cnnlab_stays_light():
    code = "import sys, cnnlab; print('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_predict_accepts_pil_arrays_tensors_paths_and_bytes(predictor, tmp_path):
    img = digit(5)
    path = tmp_path / "d.png"
    img.save(path)
    a = np.asarray(img)
    forms = [img, a, a.astype(np.float32) / 255, torch.from_numpy(a.copy()), torch.from_numpy(a.copy())[None],
             str(path), path, png_bytes(img), img.convert("RGBA"), np.stack([a] * 3, axis=-1)]
    preds = predictor.predict(forms, top_k=3)
    assert len(preds) == len(forms)
    for p in preds:
        assert isinstance(p, Prediction)
        assert p.labels == preds[0].labels
        assert p.probs == pytest.approx(preds[0].probs, abs=1e-6)
        assert torch.equal(p.input, preds[0].input)
    # A single image gives a one-element list; a 4-D batch is split into images.
    assert len(predictor.predict(img)) == 1
    batch = torch.from_numpy(np.stack([a, np.asarray(digit(6))]))[:, None]
    assert [p.labels for p in predictor.predict(batch)] == [preds[0].labels, predictor.predict(digit(6))[0].labels]


def test_prediction_is_the_network_on_the_preprocessed_input(predictor):
    preds = predictor.predict([digit(s) for s in range(20)], top_k=10)
    inputs = torch.stack([p.input for p in preds])
    assert inputs.shape == (20, 1, 28, 28) and inputs.dtype == torch.float32
    with torch.no_grad():
        probs = torch.softmax(predictor.model(inputs), 1)
    for p, row in zip(preds, probs):
        assert p.probs == sorted(p.probs, reverse=True)
        assert sum(p.probs) == pytest.approx(1.0, abs=1e-5)          # top-10 of 10 classes: everything
        assert p.probs == pytest.approx(row[p.indices].tolist(), abs=1e-6)
        assert p.labels == [predictor.classes[i] for i in p.indices] and p.label == p.labels[0]


def test_batching_does_not_change_results(tiny_trained_run):
    images = [digit(s) for s in range(9)]
    one = load(tiny_trained_run, batch_size=1).predict(images)
    many = load(tiny_trained_run, batch_size=4).predict(images)
    assert [p.labels for p in one] == [p.labels for p in many]
    assert np.allclose([p.probs for p in one], [p.probs for p in many], atol=1e-5)


def test_top_k_is_clipped_to_the_number_of_classes(predictor):
    assert len(predictor.predict(digit(0), top_k=50)[0].labels) == 10
    assert len(predictor.predict(digit(0), top_k=1)[0].labels) == 1


def test_predict_raises_a_clear_error_for_a_bad_image(predictor):
    with pytest.raises(ImageError, match="the file is empty"):
        predictor.predict([digit(0), b""])
    with pytest.raises(ImageError, match="blank"):
        predictor.predict(np.zeros((28, 28), dtype=np.uint8))
    with pytest.raises(ImageError, match="shape"):
        predictor.predict(np.zeros((2, 3, 4, 5, 6)))


def test_load_errors(tmp_path, tiny_trained_run):
    with pytest.raises(RunDirError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(RunDirError, match="no best.pt"):
        load(tmp_path)
    payload = load_checkpoint(tiny_trained_run / "best.pt")
    del payload["data"]["preprocess"]
    save_checkpoint(tmp_path / "old.pt", payload)
    with pytest.raises(CheckpointError, match="no preprocessing description"):
        load(tmp_path / "old.pt")
    payload["data"]["preprocess"] = {"style": "sharpen-then-guess"}
    save_checkpoint(tmp_path / "future.pt", payload)
    with pytest.raises(CheckpointError, match="unknown preprocessing style 'sharpen-then-guess'"):
        load(tmp_path / "future.pt")


def test_resize_style_model_is_fed_normalised_inputs(tiny_trained_run, tmp_path):
    payload = load_checkpoint(tiny_trained_run / "best.pt")
    payload["data"]["preprocess"] = {"style": "resize", "scale": 255.0, "mean": [0.5], "std": [0.25]}
    save_checkpoint(tmp_path / "resize.pt", payload)
    p = load(tmp_path / "resize.pt")
    [pred] = p.predict(Image.new("L", (56, 84), 204))
    assert pred.input.shape == (1, 28, 28)
    assert torch.allclose(pred.input, torch.full((1, 28, 28), (0.8 - 0.5) / 0.25), atol=1e-5)


# --- files and folders ---------------------------------------------------------------------


def test_find_images_recurses_sniffs_content_and_skips_hidden_and_non_images(folder):
    found = find_images([folder])
    names = sorted(Path(f).name for f in found.files)
    assert names == sorted(["a.png", "b_no_extension", "c.png", *BAD])
    assert [Path(s).name for s in found.skipped] == ["notes.txt"]
    assert find_images([folder / "notes.txt"]).files == [str(folder / "notes.txt")]  # named files are always tried


def test_predict_files_keeps_going_and_names_every_bad_file(predictor, folder, tmp_path):
    seen = []
    results = predictor.predict_files([folder, tmp_path / "missing.png"], top_k=2, chunk=2, workers=2,
                                      on_result=seen.append)
    assert len(results) == 8 and [r.path for r in seen] == [r.path for r in results]
    by_name = {Path(r.path).name: r for r in results}
    for name in ["a.png", "b_no_extension", "c.png"]:
        assert by_name[name].ok and len(by_name[name].prediction.labels) == 2
    for name, reason in {**BAD, "missing.png": "no such file"}.items():
        r = by_name[name]
        assert not r.ok and r.prediction is None and reason in r.error, (name, r.error)
    assert len(results.failed) == 5
    # Same images one by one through predict(): same answers.
    direct = predictor.predict([folder / "a.png", folder / "b_no_extension"], top_k=2)
    assert by_name["a.png"].prediction.probs == pytest.approx(direct[0].probs, abs=1e-6)
    assert by_name["b_no_extension"].prediction.labels == direct[1].labels


def test_save_preprocessed_writes_the_network_inputs(predictor, folder, tmp_path):
    out = tmp_path / "seen"
    results = predictor.predict_files([folder / "a.png", folder / "sub" / "c.png", folder / "sub" / "c.png"],
                                      save_preprocessed=out)
    files = sorted(p.name for p in out.iterdir())
    assert files == [".cnnlab-written", "a.png", "c.png"]  # the same path given twice is predicted once
    assert (out / ".cnnlab-written").read_text().split() == ["a.png", "c.png"]  # what a later --overwrite may remove
    saved = np.asarray(Image.open(out / "a.png"))
    assert saved.shape == (28, 28)
    assert np.array_equal(saved, (results.results[0].prediction.input[0] * 255).round().numpy().astype(np.uint8))


# --- the command line ----------------------------------------------------------------------


class Ran:
    def __init__(self, result) -> None:
        self.returncode, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr
        # Only SystemExit may end a command: anything else would be a traceback for the user.
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def run_cli(*args: str) -> Ran:
    return Ran(CliRunner().invoke(cli, list(args)))


def test_cli_predict_table_csv_errors_and_exit_code(tiny_trained_run, folder, tmp_path):
    out = tmp_path / "preds.csv"
    proc = run_cli("predict", str(tiny_trained_run), str(folder), "--top-k", "3", "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == len(BAD)
    for name, reason in BAD.items():
        assert any(str(folder / name) in line and reason in line for line in error_lines), name
    assert "3 predicted, 4 failed, 1 non-image file(s) in folders skipped" in proc.stderr
    table = proc.stdout.splitlines()
    assert table[0].split() == ["path", "top-1", "top-2", "top-3"] and len(table) == 4
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "label_1", "prob_1", "label_2", "prob_2", "label_3", "prob_3", "error"]
    assert len(rows) == 7
    ok = [r for r in rows if not r["error"]]
    assert len(ok) == 3 and all(r["label_1"] in [str(i) for i in range(10)] for r in ok)
    assert all(1.0 >= float(r["prob_1"]) >= float(r["prob_2"]) >= float(r["prob_3"]) for r in ok)


def test_cli_predict_all_good_exits_zero_and_writes_json(tiny_trained_run, folder, tmp_path):
    out = tmp_path / "preds.json"
    proc = run_cli("predict", str(tiny_trained_run), str(folder / "a.png"), str(folder / "sub"), "-o", str(out),
                   "--top-k", "2", "--save-preprocessed", str(tmp_path / "seen"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["top_k"] == 2 and data["classes"] == [str(i) for i in range(10)]
    assert [Path(r["path"]).name for r in data["results"]] == ["a.png", "c.png"]
    assert all(len(r["top_k"]) == 2 and r["error"] is None for r in data["results"])
    # the server's top-k shape: [{label, index, prob}], best first; label/prob repeat the first
    first = data["results"][0]
    assert set(first["top_k"][0]) == {"label", "index", "prob"} and first["label"] == first["top_k"][0]["label"]
    assert first["top_k"][0]["prob"] >= first["top_k"][1]["prob"] and first["prob"] == first["top_k"][0]["prob"]
    assert sorted(p.name for p in (tmp_path / "seen").iterdir() if p.name != ".cnnlab-written") == ["a.png", "c.png"]


def test_cli_predict_never_overwrites_without_overwrite(tiny_trained_run, folder, tmp_path):
    out = tmp_path / "preds.csv"
    out.write_text("precious\n")
    proc = run_cli("predict", str(tiny_trained_run), str(folder / "a.png"), "-o", str(out))
    assert proc.returncode != 0
    assert "already exists; pass --overwrite" in proc.stderr and proc.stderr.count("\n") == 1
    assert out.read_text() == "precious\n"
    proc = run_cli("predict", str(tiny_trained_run), str(folder / "a.png"), "-o", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("path,label_1,prob_1")
    seen = tmp_path / "seen"
    seen.mkdir()
    (seen / "old.png").write_bytes(b"x")
    proc = run_cli("predict", str(tiny_trained_run), str(folder / "a.png"), "--save-preprocessed", str(seen))
    assert proc.returncode == 2 and "holds files cnnlab did not write (old.png)" in proc.stderr
    # --overwrite replaces only what cnnlab wrote there: old.png is the user's (issue 24)
    proc = run_cli("predict", str(tiny_trained_run), str(folder / "a.png"), "--save-preprocessed", str(seen),
                   "--overwrite")
    assert proc.returncode == 2 and "holds files cnnlab did not write (old.png); nothing was removed" in proc.stderr
    assert (seen / "old.png").read_bytes() == b"x"
    (seen / "old.png").unlink()
    for _ in range(2):  # the second time, --overwrite removes the PNG the first wrote
        proc = run_cli("predict", str(tiny_trained_run), str(folder / "a.png"), "--save-preprocessed", str(seen),
                       "--overwrite")
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in seen.iterdir()) == [".cnnlab-written", "a.png"]


def test_cli_predict_bad_model_is_one_line(tmp_path, folder):
    proc = run_cli("predict", str(tmp_path / "no-run"), str(folder / "a.png"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


# --- real MNIST ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A real LeNet-5: 1 epoch on 3,000 real training images (a few seconds)."""
    from cnnlab.core.config import Config
    from cnnlab.service.training import train_config as train

    cfg = Config().override("data", data_dir=str(real_mnist_dir()), subset=3000, download=False)
    cfg = cfg.override("train", epochs=1, progress=False, train_eval=False)
    run_dir = tmp_path_factory.mktemp("real") / "run"
    train(cfg, run_dir, log=lambda _msg: None)
    return run_dir


@pytest.mark.real_data
@requires_real_mnist
def test_real_mnist_test_digits_saved_as_png_predict_like_the_tensors(real_run, tmp_path):
    from cnnlab.data.mnist import load_mnist

    test = load_mnist(real_mnist_dir(), train=False, download=False)
    n = 1000
    images, labels = test.images[:n], test.labels[:n]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:05d}.png")

    predictor = load(real_run)
    results = predictor.predict_files([folder], top_k=3)
    assert not results.failed and len(results) == n
    with torch.no_grad():
        probs = torch.softmax(predictor.model(images.float() / 255), 1)
    from_files = torch.tensor([r.prediction.indices[0] for r in results])
    assert torch.equal(from_files, probs.argmax(1))
    assert np.allclose([r.prediction.probs[0] for r in results], probs.max(1).values.numpy(), atol=1e-6)
    assert float((from_files == labels).float().mean()) > 0.7  # a real classifier (chance: 0.1)


def test_cli_predict_keeps_input_order_and_reports_an_empty_folder(tiny_trained_run, folder, tmp_path):
    out = tmp_path / "p.csv"
    proc = run_cli("predict", str(tiny_trained_run), str(folder / "a.png"), str(tmp_path / "missing.png"),
                   str(folder / "sub" / "c.png"), "-o", str(out))
    assert proc.returncode == 1
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "missing.png", "c.png"]
    assert rows[1]["error"] == "no such file" and rows[0]["label_1"] and rows[2]["label_1"]
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("predict", str(tiny_trained_run), str(empty))
    assert proc.returncode == 1 and f"error: no image files found in {empty}" in proc.stderr


@pytest.mark.parametrize("pixels, found", [
    (np.full((28, 28), 200.0, dtype=np.float32), r"\[200, 200\]"),   # floats on the 0..255 scale
    (np.full((28, 28), 1000, dtype=np.int32), r"\[1000, 1000\]"),     # 16-bit counts
    (np.full((28, 28), -0.5, dtype=np.float64), r"\[-0.5, -0.5\]"),   # normalised pixels
])
def test_out_of_range_pixels_are_refused_as_training_refuses_them(predictor, pixels, found):
    """One pixel policy (data/images.pixels_to_uint8): predicting never rescales or clips what
    training would refuse, so the network never sees other pixels than the user meant."""
    from cnnlab.apps.api import _to_uint8
    from cnnlab.core.errors import ConfigError

    with pytest.raises(ImageError, match=found):
        predictor.predict(pixels)
    with pytest.raises(ConfigError, match=found):
        _to_uint8(torch.from_numpy(pixels)[None, None], "data")
