"""Start-up: each command imports only what it uses (no timing here; benchmarks/README.md has the figures).

Each case runs the command in a fresh interpreter and lists the heavy third-party modules it
left in ``sys.modules``. The declared models table (core/catalog.py) must equal what building
every registered model gives, so `cnnlab models` can print it without torch.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.core.catalog import DEFAULT_INPUT, MODELS, declared_models_table

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "torchvision", "torch._dynamo", "sklearn", "scipy", "matplotlib", "ignite", "PIL")

RUNNER = """
import json, sys
from click.testing import CliRunner
from cnnlab.apps.cli import cli
result = CliRunner().invoke(cli, json.loads(sys.argv[1]), catch_exceptions=False)
print(json.dumps({"code": result.exit_code, "output": result.output,
                  "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def run_cli(args: list[str], tmp_path: Path) -> dict:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CNNLAB_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(args), json.dumps(HEAVY)], env=env,
                         capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_models_imports_no_torch(tmp_path: Path) -> None:
    r = run_cli(["models"], tmp_path)
    assert r["code"] == 0 and "lenet5" in r["output"]
    assert r["loaded"] == []


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["predict", "--help"]])
def test_help_imports_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    r = run_cli(args, tmp_path)
    assert r["code"] == 0 and r["loaded"] == []
    if args == ["train", "--help"]:
        assert "lenet5" in r["output"] and "fashion-mnist" in r["output"]  # the lists, declared in core/catalog


def test_layers_imports_torch_only(tmp_path: Path) -> None:
    r = run_cli(["layers", "lenet5"], tmp_path)
    assert r["code"] == 0 and "416,520" in r["output"]
    assert r["loaded"] == ["torch"]


def test_training_on_mnist_never_imports_torchvision_or_sklearn(tiny_mnist: Path, tmp_path: Path) -> None:
    r = run_cli(["train", "--data-dir", str(tiny_mnist), "--no-download", "--epochs", "1", "--val-size", "100",
                 "--no-progress", "--threads", "1", "--run-dir", str(tmp_path / "run")], tmp_path)
    assert r["code"] == 0, r["output"]
    # ignite trains, torch.optim imports torch._dynamo, matplotlib draws the confusion matrix png
    assert not {"torchvision", "sklearn", "scipy"} & set(r["loaded"]), r["loaded"]


def test_the_declared_models_table_is_what_building_the_models_gives() -> None:
    from cnnlab.models import get_model_entry, list_models, supports_pretrained
    from cnnlab.models.summary import models_table, summarize_model

    (shape, classes) = DEFAULT_INPUT
    declared = {m.name: m for m in MODELS}
    for name in list_models():
        s = summarize_model(name, shape, classes)
        line = (f'ModelInfo("{name}", {s.total_params:_}, {s.total_macs:_}, {supports_pretrained(name)}, '
                f'"{get_model_entry(name).description}")')
        assert name in declared, f"add this line to core/catalog.py's MODELS: {line}"
        m = declared[name]
        assert (m.params, m.macs, m.pretrained, m.description) == (
            s.total_params, s.total_macs, supports_pretrained(name), get_model_entry(name).description), line
    assert sorted(declared) == list_models()
    from cnnlab.core.catalog import model_names

    assert model_names() == list_models()
    assert declared_models_table() == models_table(shape, classes)


def test_the_command_line_exits_fast_with_the_right_status_and_all_its_output(tmp_path: Path) -> None:
    """apps/cli.main ends with core/process.exit_now: status, output and atexit handlers as a normal exit."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = ("import atexit, pathlib, sys\n"
            "done = pathlib.Path(sys.argv[1])\n"
            "atexit.register(lambda: done.write_text('ran'))\n"
            "sys.argv = ['cnnlab'] + sys.argv[2:]\n"
            "from cnnlab.apps.cli import main\n"
            "main()\n")
    ok = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a"), "models"], env=env, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0 and ok.stdout.count("\n") == len(MODELS) + 2  # every line, flushed
    assert (tmp_path / "a").read_text() == "ran"
    bad = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b"), "layers", "nosuchmodel"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "nosuchmodel" in bad.stderr and (tmp_path / "b").read_text() == "ran"
