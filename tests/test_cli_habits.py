"""One set of habits across every command (docs/cli.md, "Habits"): walked over the click group.

- every command that reports something has ``--json``, and with it stdout is one JSON document;
- a command that writes a file the user names with ``-o`` refuses to replace it without ``--overwrite``;
- results go to stdout; "wrote ...", progress and warnings go to stderr.

A new command must be placed in one of the lists below, so it cannot dodge the habits by omission.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnlab.apps.cli import cli

# Commands whose output is a result (numbers, a table, a document).
REPORTS = {"train", "evaluate", "analyze", "predict", "compare", "export", "models", "layers", "runs", "show-data"}
# Commands that run a server or only draw pictures into a folder (their stdout is the paths drawn).
OTHERS = {"serve", "visualize"}


def commands() -> dict[str, click.Command]:
    return dict(cli.commands)


def options(cmd: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in cmd.params for opt in getattr(p, "opts", [])}


def test_every_command_is_classified() -> None:
    assert set(commands()) == REPORTS | OTHERS, "classify the new command in tests/test_cli_habits.py"


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_reporting_command_has_json(name: str) -> None:
    opt = options(commands()[name]).get("--json")
    assert opt is not None and getattr(opt, "is_flag", False), f"cnnlab {name} has no --json"


@pytest.mark.parametrize("name", sorted(REPORTS | OTHERS))
def test_a_named_output_file_needs_overwrite(name: str) -> None:
    opts = options(commands()[name])
    out = opts.get("-o")
    if out is None or (isinstance(out.type, click.Path) and not out.type.file_okay):
        return  # no -o, or -o names a folder
    assert "--overwrite" in opts, f"cnnlab {name} writes -o FILE but has no --overwrite"


# --- behaviour ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("habit-digits")
    a = np.zeros((28, 28), np.uint8)
    a[6:22, 12:16] = 255
    Image.fromarray(a).save(folder / "one.png")
    return folder


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_streams(result, wrote: bool) -> None:
    """Nothing but results on stdout; the files written, warnings and progress frames on stderr."""
    assert result.exit_code == 0, result.output
    for line in result.stdout.splitlines():
        assert not line.startswith(("wrote ", "warning:")), f"on stdout: {line!r}"
    assert "\r" not in result.stdout
    if wrote:
        assert "wrote" in result.stderr


def test_refusing_to_replace_a_named_file(tiny_trained_run, tiny_mnist, digits, tmp_path) -> None:
    for name, suffix, args in (
        ("show-data", ".png", ["show-data", "--data-dir", tiny_mnist, "--no-download", "-o"]),
        ("predict", ".csv", ["predict", tiny_trained_run, digits, "-o"]),
    ):
        target = tmp_path / f"{name}{suffix}"
        target.write_text("precious\n")
        refused = invoke(*args, target)
        assert refused.exit_code != 0 and "--overwrite" in refused.stderr, (name, refused.output)
        assert target.read_text() == "precious\n" and refused.stdout == ""
        replaced = invoke(*args, target, "--overwrite")
        assert replaced.exit_code == 0, (name, replaced.output)
        assert target.read_bytes() != b"precious\n"


def test_results_on_stdout_messages_on_stderr(tiny_trained_run, tiny_mnist, digits, tmp_path) -> None:
    assert_streams(invoke("show-data", "--data-dir", tiny_mnist, "--no-download", "-o", tmp_path / "s.png"), wrote=True)
    assert_streams(invoke("predict", tiny_trained_run, digits, "-o", tmp_path / "p.csv"), wrote=True)
    assert_streams(invoke("compare", tiny_trained_run, tiny_trained_run, "-o", tmp_path / "cmp"), wrote=True)
    assert_streams(invoke("analyze", tiny_trained_run, "--no-html"), wrote=True)
    assert_streams(invoke("evaluate", tiny_trained_run), wrote=False)
    assert_streams(invoke("runs", tiny_trained_run.parent), wrote=False)
    assert_streams(invoke("models"), wrote=False)


@pytest.mark.parametrize("args", [
    ["evaluate", "{run}"],
    ["analyze", "{run}", "--no-html"],
    ["predict", "{run}", "{digits}"],
    ["compare", "{run}", "{run}", "-o", "{tmp}/c"],
    ["runs", "{runs}"],
    ["models"],
    ["layers", "lenet5"],
    ["show-data", "--data-dir", "{data}", "--no-download", "-o", "{tmp}/s.png"],
])
def test_json_is_one_document_on_stdout(args, tiny_trained_run, tiny_mnist, digits, tmp_path) -> None:
    fill = {"run": tiny_trained_run, "runs": tiny_trained_run.parent, "digits": digits, "tmp": tmp_path,
            "data": tiny_mnist}
    result = invoke(*[a.format(**fill) for a in args], "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # exactly one document: any extra line would make this fail


def test_train_json_and_lr_find(tiny_mnist, tmp_path) -> None:
    common = ["--data-dir", tiny_mnist, "--val-size", "100", "--threads", "1", "--no-progress"]
    done = invoke("train", *common, "--epochs", "1", "--run-dir", tmp_path / "run", "--json")
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["run"] == str(tmp_path / "run") and len(doc["history"]) == 1 and 0 <= doc["test"]["accuracy"] <= 1
    assert "epoch 1/1" in done.stderr  # the epoch lines are messages here
    found = invoke("train", *common, "--lr-find", "--json")
    assert found.exit_code == 0, found.output
    doc = json.loads(found.stdout)
    assert doc["suggestion"] > 0 and len(doc["lrs"]) == len(doc["losses"]) == doc["steps"]
    # --lr-find made no run folder (".run.lock" is the trained run's lock file, kept beside it: core.runs.lock_path)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["run"]


def test_predict_and_server_share_one_top_k_shape(tiny_trained_run, digits) -> None:
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (dev extra)")
    from fastapi.testclient import TestClient

    from cnnlab.apps.serve import create_app
    from cnnlab.service.predictor import load

    doc = json.loads(invoke("predict", tiny_trained_run, digits, "--json", "--top-k", "3").stdout)
    mine = doc["results"][0]
    with TestClient(create_app(load(tiny_trained_run))) as client:
        served = client.post("/api/predict?top_k=3", content=(digits / "one.png").read_bytes(),
                             headers={"Content-Type": "image/png"}).json()
    assert [set(c) for c in mine["top_k"]] == [set(c) for c in served["top_k"]] == [{"label", "index", "prob"}] * 3
    assert [c["index"] for c in mine["top_k"]] == [c["index"] for c in served["top_k"]]
    assert (mine["label"], mine["prob"]) == (served["label"], pytest.approx(served["prob"], abs=1e-6))
