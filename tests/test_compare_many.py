"""`cnnlab compare` of three or more runs (or a glob): every run scored once, every pair tested."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnnlab.analysis.report import compare_many, compare_runs, holm
from cnnlab.apps.cli import cli


@pytest.fixture(scope="module")
def three_runs(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from conftest import train_tiny_run

    root = tmp_path_factory.mktemp("three")
    return [train_tiny_run(tiny_mnist, root / f"lenet5-s{seed}", seed=seed, epochs=1) for seed in range(3)]


def test_pairs_agree_with_the_two_run_comparison(three_runs, tmp_path) -> None:
    many = compare_many(three_runs, out=tmp_path / "c")
    assert len(many.pairs) == 3 and [p.run_a.name + p.run_b.name for p in many.pairs] == [
        "lenet5-s0lenet5-s1", "lenet5-s0lenet5-s2", "lenet5-s1lenet5-s2"]
    two = compare_runs(three_runs[0], three_runs[2], out=tmp_path / "two")
    pair = many.pairs[1]
    assert pair.mcnemar == two.mcnemar and np.array_equal(pair.disagreements, two.disagreements)
    assert many.accuracies[0] == two.accuracy_a and many.accuracies[2] == two.accuracy_b
    assert all(h >= p.mcnemar.p_value for h, p in zip(many.p_holm, many.pairs))
    written = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert written == json.loads(json.dumps(many.to_dict())) and len(written["pairs"]) == 3


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_cli_takes_a_quoted_glob(three_runs) -> None:
    pattern = str(three_runs[0].parent / "lenet5-*")
    result = CliRunner().invoke(cli, ["compare", pattern])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("3 runs on 200 test images") and sum(" A-B " in f" {l} " for l in lines) == 1
    assert "p (Holm)" in result.stdout and result.stderr == ""  # nothing written without -o
    doc = json.loads(CliRunner().invoke(cli, ["compare", *map(str, three_runs), "--json"]).stdout)
    assert [r["run"] for r in doc["runs"]] == [str(p) for p in three_runs] and len(doc["pairs"]) == 3


def test_a_glob_that_matches_nothing_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "nothing-*")])
    assert result.exit_code == 2 and "no run folders match" in result.output
