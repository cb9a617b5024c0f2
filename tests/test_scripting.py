"""cnnlab in scripts and pipes: --json, -o -, no progress frames in logs, p-values, old spellings."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnlab.apps.cli import cli


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    for i in range(3):
        a = np.zeros((28, 28), np.uint8)
        a[6 + i : 22, 12:16] = 255
        Image.fromarray(a).save(folder / f"d{i}.png")
    return folder


def run_json(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # one JSON document and nothing else on stdout


def test_evaluate_json(tiny_trained_run):
    doc = run_json(["evaluate", str(tiny_trained_run), "--json"])
    assert doc["num_images"] == 200 and 0 <= doc["accuracy"] <= 1 and set(doc["per_class"]) == set(map(str, range(10)))
    assert doc["run"] == str(tiny_trained_run) and doc["checkpoint"] == "best.pt"
    written = json.loads((tiny_trained_run / "report.json").read_text())
    assert {k: v for k, v in doc.items() if k != "run"} == written and written["epoch"] >= 1


def test_predict_json(tiny_trained_run, digit_files):
    result = CliRunner().invoke(cli, ["predict", str(tiny_trained_run), str(digit_files), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["results"]) == 3 and "3 predicted, 0 failed" in result.stderr


def test_compare_json(tiny_trained_run, tmp_path):
    doc = run_json(["compare", str(tiny_trained_run), str(tiny_trained_run), "-o", str(tmp_path / "c"), "--json"])
    assert doc["mcnemar"]["p_value"] == 1.0 and doc["num_disagreements"] == 0
    assert doc["files"]["json"] == str(tmp_path / "c" / "compare.json")


def test_models_json():
    doc = run_json(["models", "--json"])
    lenet = next(m for m in doc["models"] if m["name"] == "lenet5")
    assert doc["input_shape"] == [1, 28, 28] and lenet["macs"] == 416_520 and lenet["params"] > 0


def test_layers_json():
    doc = run_json(["layers", "lenet5", "--conv", "5", "--padding", "2", "--json"])
    assert doc["model"]["total_macs"] == 416_520 and doc["model"]["layers"][0]["output_shape"] == [6, 28, 28]
    assert doc["conv"]["output"] == 28 and "pool" not in doc
    assert run_json(["layers", "--pool", "2", "--size", "28", "--json"]) == {"pool": {
        "size": 28, "kernel": 2, "stride": 2, "padding": 0, "dilation": 1, "ceil_mode": False, "output": 14}}


@pytest.mark.parametrize("command", [
    "evaluate {run}", "predict {run} {digits}", "compare {run} {run} -o {tmp}/c", "models", "layers lenet5",
])
def test_json_through_a_real_pipe(command, tiny_trained_run, digit_files, tmp_path):
    """The issue's check: `cnnlab evaluate RUN --json | python -c "import json,sys; json.load(sys.stdin)"`."""
    args = command.format(run=tiny_trained_run, digits=digit_files, tmp=tmp_path).split()
    cnnlab = subprocess.Popen([sys.executable, "-m", "cnnlab", *args, "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    reader = subprocess.run([sys.executable, "-c", "import json,sys; print(type(json.load(sys.stdin)).__name__)"],
                            stdin=cnnlab.stdout, capture_output=True, text=True, timeout=300)
    cnnlab.stdout.close()
    assert cnnlab.wait(timeout=300) == 0 and reader.stdout.strip() == "dict", reader.stderr


# --- -o - ----------------------------------------------------------------------------------


def test_predict_writes_csv_to_stdout(tiny_trained_run, digit_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["predict", str(tiny_trained_run), str(digit_files), "-o", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3 and list(rows[0])[:2] == ["path", "label_1"]
    assert not (tmp_path / "-").exists() and "wrote" not in result.stderr


def test_predict_writes_json_to_stdout(tiny_trained_run, digit_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = run_json(["predict", str(tiny_trained_run), str(digit_files), "-o", "-", "--format", "json"])
    assert len(doc["results"]) == 3 and not (tmp_path / "-").exists()


def test_show_data_writes_png_to_stdout(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["show-data", "--data-dir", str(tiny_mnist), "--no-download", "-o", "-"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b"\x89PNG") and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["compare {run} {run}", "visualize {run}"])
def test_dash_for_a_folder_output_is_refused(command, tiny_trained_run):
    result = CliRunner().invoke(cli, [*command.replace("{run}", str(tiny_trained_run)).split(), "-o", "-"])
    assert result.exit_code == 2 and "writes a folder" in result.output


# --- progress bar ------------------------------------------------------------------------------


def _train(tiny_mnist, run_dir, *extra):
    return subprocess.run([sys.executable, "-m", "cnnlab", "train", "--data-dir", str(tiny_mnist), "--run-dir",
                           str(run_dir), "--epochs", "1", "--val-size", "100", "--threads", "1", *extra],
                          capture_output=True, timeout=300)  # bytes: text mode would turn \r into \n


def test_no_progress_frames_in_pipes_unless_asked(tiny_mnist, tmp_path):
    quiet = _train(tiny_mnist, tmp_path / "a")
    assert quiet.returncode == 0, quiet.stderr
    assert b"\r" not in quiet.stdout + quiet.stderr and b"%|" not in quiet.stderr and b"epoch 1/1" in quiet.stdout
    assert json.loads((tmp_path / "a" / "config.json").read_text())["config"]["train"]["progress"] is False
    asked = _train(tiny_mnist, tmp_path / "b", "--progress")
    assert asked.returncode == 0, asked.stderr
    assert b"\r" in asked.stderr and b"%|" in asked.stderr  # the bar, because it was asked for


# --- compare's p-value ---------------------------------------------------------------------------


def test_compare_never_prints_p_equals_zero(tmp_path):
    from cnnlab.analysis.metrics import mcnemar_from_table
    from cnnlab.analysis.report import Comparison, format_p

    m = mcnemar_from_table([[0, 5000], [0, 0]])  # 5000 discordant pairs, all one way
    assert m.p_value < 1e-300
    cmp = Comparison(tmp_path / "a", tmp_path / "b", 1.0, 0.0, m, np.arange(5000),
                     {"num_images": 5000, "dataset": "mnist"})
    assert "p < 1e-300" in cmp.text() and "p = 0" not in cmp.text()
    assert format_p(0.01234) == "p = 0.01234" and format_p(1.0) == "p = 1"


# --- old spellings: gone before the first release, never silently taken for something else -------


@pytest.mark.parametrize("old", [
    "compare {run} {run} --out {tmp}/c",
    "show-data --data-dir {data} --no-download --out {tmp}/s.png",
    "evaluate {run} --batch-size 64",
    "predict {run} {digits} --batch-size 2",
])
def test_old_spellings_are_usage_errors(old, tiny_trained_run, tiny_mnist, digit_files, tmp_path):
    args = old.format(run=tiny_trained_run, tmp=tmp_path, data=tiny_mnist, digits=digit_files).split()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "No such option" in result.output, result.output


def test_json_and_dash_output_together_are_refused(tiny_trained_run, digit_files):
    result = CliRunner().invoke(cli, ["predict", str(tiny_trained_run), str(digit_files), "--json", "-o", "-"])
    assert result.exit_code == 2 and "both write to stdout" in result.output


def test_old_spellings_are_hidden_from_help():
    for name in ("compare", "visualize", "show-data", "evaluate", "analyze", "predict"):
        text = CliRunner().invoke(cli, [name, "--help"]).output
        assert "--out " not in text and "--batch-size" not in text, name
