"""Error analysis: the numbers (against scikit-learn and hand-computed values), analyze, compare, show-data, tracking."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cnnlab.analysis import metrics as M
from cnnlab.analysis import report as A
from cnnlab.apps.cli import cli
from conftest import make_mnist_folder, tiny_run_config, train_tiny_run


def _known_predictions(n: int = 600, k: int = 10, seed: int = 0):
    """Logits whose argmax is right ~70% of the time, with every class present."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    logits = rng.normal(size=(n, k)).astype(np.float32)
    right = rng.random(n) < 0.7
    logits[np.arange(n), labels] += np.where(right, 4.0, -1.0)
    return torch.from_numpy(logits), torch.from_numpy(labels)


# --- numbers against scikit-learn ------------------------------------------------------------


def test_numbers_equal_sklearn_on_known_predictions():
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_score, recall_score

    from cnnlab.analysis.metrics import score

    logits, labels = _known_predictions()
    classes = [str(i) for i in range(10)]
    pred = M.Predictions.from_logits(logits, labels, torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8), classes)
    y, p = labels.numpy(), pred.preds
    assert np.array_equal(p, logits.argmax(1).numpy())
    cm = M.confusion_matrix(y, p, 10)
    assert np.array_equal(cm, confusion_matrix(y, p, labels=list(range(10))))
    rates = M.per_class_rates(cm)
    assert np.allclose(rates["recall"], recall_score(y, p, average=None, labels=list(range(10)), zero_division=0))
    assert np.allclose(rates["precision"], precision_score(y, p, average=None, labels=list(range(10)), zero_division=0))
    assert np.array_equal(rates["support"], np.bincount(y, minlength=10))
    assert pred.correct.mean() == pytest.approx(accuracy_score(y, p))
    probs = torch.softmax(logits.double(), 1).numpy()
    assert pred.losses.mean() == pytest.approx(log_loss(y, probs, labels=list(range(10))), rel=1e-5)
    report = score(logits, labels, classes)
    assert np.array_equal(report.confusion, cm) and report.accuracy == pytest.approx(pred.correct.mean())

    pairs = M.most_confused(cm, classes)
    assert sum(pc.count for pc in pairs) == int((y != p).sum())
    counts = [pc.count for pc in pairs]
    assert counts == sorted(counts, reverse=True)
    first = pairs[0]
    assert first.count == int(((y == int(first.true)) & (p == int(first.pred))).sum())
    assert M.most_confused(cm, classes, top=3) == pairs[:3]


def test_most_confused_small_table_and_ties():
    cm = np.array([[5, 2, 0], [3, 4, 3], [0, 1, 9]])
    pairs = M.most_confused(cm, ["a", "b", "c"])
    assert [(q.true, q.pred, q.count) for q in pairs] == [("b", "a", 3), ("b", "c", 3), ("a", "b", 2), ("c", "b", 1)]
    assert M.most_confused(np.eye(3, dtype=int) * 4, ["a", "b", "c"]) == []


# --- calibration -----------------------------------------------------------------------------


def test_ece_on_a_constructed_example():
    # 10 images at confidence 0.95 of which 8 are right, 10 at 0.55 of which 5 are right:
    # ECE = 0.5 * |0.8 - 0.95| + 0.5 * |0.5 - 0.55| = 0.075 + 0.025 = 0.1
    conf = np.array([0.95] * 10 + [0.55] * 10)
    correct = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5, dtype=bool)
    assert M.expected_calibration_error(conf, correct) == pytest.approx(0.1)
    bins = M.reliability_bins(conf, correct, 15)
    assert bins.counts.sum() == 20 and (bins.counts > 0).sum() == 2
    assert bins.counts[14] == 10 and bins.accuracy[14] == pytest.approx(0.8)
    assert bins.counts[8] == 10 and bins.confidence[8] == pytest.approx(0.55)  # (0.533, 0.6]
    assert np.isnan(bins.accuracy[0])
    # Perfect calibration: in each bin accuracy equals confidence.
    conf2 = np.array([0.6] * 5 + [1.0] * 4)
    ok2 = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1], dtype=bool)
    assert M.expected_calibration_error(conf2, ok2) == pytest.approx(0.0)
    # A model always 100% sure and always wrong is off by 1.
    assert M.expected_calibration_error(np.ones(7), np.zeros(7, dtype=bool)) == pytest.approx(1.0)


def test_ece_matches_a_direct_loop_over_bins():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.1, 1.0, size=2000)
    correct = rng.random(2000) < conf ** 2
    edges = np.linspace(0, 1, 16)
    expected = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            expected += m.mean() * abs(correct[m].mean() - conf[m].mean())
    assert M.expected_calibration_error(conf, correct) == pytest.approx(expected)
    assert M.expected_calibration_error(np.array([0.0]), np.array([True])) == pytest.approx(1.0)  # 0 lands in bin 0
    with pytest.raises(M.ConfigError):
        M.reliability_bins(conf, correct, 0)


# --- McNemar ---------------------------------------------------------------------------------


def test_mcnemar_exact_on_a_known_table():
    # b = 10, c = 2: p = 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    r = M.mcnemar_from_table([[90, 10], [2, 98]])
    assert r.p_value == pytest.approx(158 / 4096)
    assert (r.only_a_right, r.only_b_right) == (10, 2)
    # Textbook values: b = 1, c = 9 -> 2 * (1 + 10) / 1024; symmetric tables give 1.
    assert M.mcnemar_from_table([[50, 1], [9, 40]]).p_value == pytest.approx(22 / 1024)
    assert M.mcnemar_from_table([[5, 4], [4, 5]]).p_value == 1.0
    assert M.mcnemar_from_table([[100, 0], [0, 3]]).p_value == 1.0
    big = M.mcnemar_from_table([[0, 60], [40, 0]])
    expected = 2 * sum(math.comb(100, i) for i in range(41)) / 2 ** 100
    assert big.p_value == pytest.approx(expected, rel=1e-9)


def test_mcnemar_from_paired_predictions_builds_the_table():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 0, 1, 0, 0], dtype=bool)
    r = M.mcnemar_exact(a, b)
    assert r.table == [[2, 3], [1, 2]]
    assert r.p_value == pytest.approx(M.mcnemar_from_table([[2, 3], [1, 2]]).p_value)
    with pytest.raises(ValueError):
        M.mcnemar_exact(a, b[:-1])


# --- selections ------------------------------------------------------------------------------


def test_top_losses_selection_and_order_are_stable():
    losses = np.array([0.1, 3.0, 0.5, 3.0, 2.0, 0.0])
    assert M.top_losses(losses, 3).tolist() == [1, 3, 4]  # ties keep test order
    assert M.top_losses(losses, 100).tolist() == [1, 3, 4, 2, 0, 5]
    labels = np.array([8, 8, 4, 8, 9, 4, 8, 9, 8])
    preds = np.array([0, 8, 9, 3, 9, 4, 5, 7, 1])
    chosen = M.select_misclassified(labels, preds, [8, 4, 9], per_class=2)
    assert {k: v.tolist() for k, v in chosen.items()} == {8: [0, 3], 4: [2], 9: [7]}
    assert M.classes_with_most_errors(labels, preds, 10, n=2) == [8, 4]
    assert M.resolve_classes(["8", 4, " 9"], [str(i) for i in range(10)]) == [8, 4, 9]
    assert M.resolve_classes(["cat", "1"], ["dog", "cat"]) == [1, 1]
    with pytest.raises(M.ConfigError, match="unknown class 'zebra'"):
        M.resolve_classes(["zebra"], ["dog", "cat"])


def test_read_metrics_and_best_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,epoch_time_s,best\n"
                    "1,,,0.5,0.8,0.001,1.0,True\n2,,,0.3,0.9,0.001,1.0,True\n3,,,0.4,0.88,0.001,1.0,False\n")
    rows = A.read_metrics(path)
    assert rows[0]["train_loss"] is None and rows[1]["val_acc"] == pytest.approx(0.9) and rows[2]["best"] is False
    assert M.best_epoch(rows) == 2
    assert M.best_epoch([{"epoch": 1, "val_loss": 0.2}, {"epoch": 2, "val_loss": 0.1}]) == 2


# --- analyze / compare on trained tiny runs ---------------------------------------------------


def _train(data_dir: Path, run: Path, *, seed: int = 0, epochs: int = 1, **train_opts) -> Path:
    return train_tiny_run(data_dir, run, epochs=epochs, seed=seed, **train_opts)


@pytest.fixture(scope="module")
def two_runs(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("analysis-runs")
    return _train(tiny_mnist, root / "a", seed=0, epochs=1), _train(tiny_mnist, root / "b", seed=1, epochs=1)


def test_analyze_run_writes_everything(two_runs):
    run, _ = two_runs
    result = A.interpret_run(run).save(classes=["8", "4", "9"], per_class=3, top_k=5)
    out = run / "analysis"
    for name in ["summary.json", "predictions.csv", "confusion_matrix.png", "misclassified.png", "top_losses.png",
                 "top_losses.csv", "most_confused.csv", "per_class.png", "per_class.csv", "reliability.png",
                 "reliability.csv", "confidence.png", "training_curves.png", "top_losses_heatmap.png", "embedding.png",
                 "index.html"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    report = json.loads((run / "report.json").read_text())
    assert summary["accuracy"] == pytest.approx(report["accuracy"])
    assert summary["num_images"] == 200 and summary["gallery_classes"] == ["8", "4", "9"]
    assert summary["test_set"]["num_images"] == 200 and len(summary["test_set"]["labels_sha256"]) == 64
    p = result.predictions
    assert summary["errors"] == int((p.preds != p.labels).sum())
    assert summary["ece"] == pytest.approx(M.expected_calibration_error(p.confidence, p.correct))
    for k in (8, 4, 9):
        expected = np.flatnonzero((p.labels == k) & (p.preds != k))[:3]
        assert result.misclassified[k].tolist() == expected.tolist()
    top = (out / "top_losses.csv").read_text().splitlines()
    assert len(top) == 6 and int(top[1].split(",")[1]) == int(np.argmax(p.losses))
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 201
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 9 and 'id="embedding"' in html and "http://" not in html and "https://" not in html


def test_cli_analyze_takes_classes_like_the_lesson(two_runs):
    run, _ = two_runs
    result = CliRunner().invoke(cli, ["analyze", str(run), "--classes", "8", "4", "9", "--per-class", "2", "--no-html"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "ECE (15 bins)" in result.output
    assert json.loads((run / "analysis" / "summary.json").read_text())["gallery_classes"] == ["8", "4", "9"]
    # Classes before the run folder work too, and "8,4" lists are split.
    result = CliRunner().invoke(cli, ["analyze", "--classes", "7,3", "2", str(run), "--per-class", "1", "--no-html"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "analysis" / "summary.json").read_text())["gallery_classes"] == ["7", "3", "2"]
    result = CliRunner().invoke(cli, ["analyze", str(run), "--classes", "ten"])
    assert result.exit_code == 2 and "unknown class 'ten'" in result.output


def test_cli_analyze_no_inside_skips_the_attributions_and_the_embedding(two_runs):
    run, _ = two_runs
    result = CliRunner().invoke(cli, ["analyze", str(run), "--no-inside", "--no-html", "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert "top_losses" in files and "top_losses_heatmap" not in files and "embedding" not in files


def test_compare_two_runs_matches_paired_predictions(two_runs, tmp_path):
    a, b = two_runs
    cmp = A.compare_runs(a, b, out=tmp_path / "cmp", max_images=5)
    pa, _ = A.predict_run(a)
    pb, _ = A.predict_run(b)
    assert cmp.accuracy_a == pytest.approx(pa.correct.mean()) and cmp.accuracy_b == pytest.approx(pb.correct.mean())
    assert cmp.difference == pytest.approx(pb.correct.mean() - pa.correct.mean())
    assert cmp.mcnemar.only_a_right == int((pa.correct & ~pb.correct).sum())
    assert cmp.mcnemar.only_b_right == int((~pa.correct & pb.correct).sum())
    assert cmp.disagreements.tolist() == np.flatnonzero(pa.preds != pb.preds).tolist()
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["mcnemar"]["p_value"] == pytest.approx(cmp.mcnemar.p_value)
    assert (tmp_path / "cmp" / "disagreements.png").stat().st_size > 0

    result = CliRunner().invoke(cli, ["compare", str(a), str(a), "-o", str(tmp_path / "same")])
    assert result.exit_code == 0, result.output
    assert "difference B - A: +0.00%" in result.output and "p = 1" in result.output
    assert "disagree on 0 images" in result.output


def test_compare_refuses_runs_scored_on_different_test_sets(two_runs, tmp_path):
    a, _ = two_runs
    other = _train(make_mnist_folder(tmp_path / "data", n_train=300, n_test=150), tmp_path / "other")
    with pytest.raises(A.IncomparableRunsError, match="different test sets"):
        A.compare_runs(a, other, out=tmp_path / "cmp")
    fa = {"dataset": "mnist", "num_images": 3, "labels_sha256": "x", "images_sha256": "y"}
    with pytest.raises(A.IncomparableRunsError, match="test labels differ"):
        A.check_same_test_set(fa, {**fa, "labels_sha256": "z"}, "a", "b")
    result = CliRunner().invoke(cli, ["compare", str(a), str(other)])
    assert result.exit_code == 2 and "different test sets" in result.output and "Traceback" not in result.output


def test_show_data_grid_is_seeded(tiny_mnist, tmp_path):
    i1 = A.sample_images(data_dir=str(tiny_mnist), n=12, seed=5, download=False)[3]
    i2 = A.sample_images(data_dir=str(tiny_mnist), n=12, seed=5, download=False)[3]
    i3 = A.sample_images(data_dir=str(tiny_mnist), n=12, seed=6, download=False)[3]
    assert i1.tolist() == i2.tolist() and i1.tolist() != i3.tolist()
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["show-data", "--dataset", "mnist", "--n", "10", "--seed", "1",
                                      "--data-dir", str(tiny_mnist), "--no-download", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000


# --- tracking --------------------------------------------------------------------------------


def test_train_tensorboard_writes_scalars_and_histograms(tiny_mnist, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install 'cnnlab[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(tiny_mnist, tmp_path / "run", epochs=2, tensorboard=True)
    logdir = run / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(logdir), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("training/batch_loss", "lr/group_0", "epoch/val_loss", "epoch/val_acc", "epoch/train_loss"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert [e.step for e in acc.Scalars("epoch/val_loss")] == [1, 2]
    assert any(t.startswith("weights/") for t in tags["histograms"])
    assert any(t.startswith("grads/") for t in tags["histograms"])
    assert json.loads((run / "config.json").read_text())["config"]["train"]["tensorboard"] is True


def test_tensorboard_missing_names_the_extra(tiny_mnist, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    result = CliRunner().invoke(cli, ["train", "--tensorboard", "--data-dir", str(tiny_mnist), "--no-download",
                                      "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2
    assert 'pip install "cnnlab[tensorboard]"' in result.output
    assert not (tmp_path / "run").exists()  # refused before a run folder was made


def test_tensorboard_logger_does_not_swallow_training_errors(tiny_mnist, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install 'cnnlab[tensorboard]'")
    from cnnlab.core.errors import NonFiniteLossError
    from cnnlab.service.training import train_config as train

    cfg = tiny_run_config(tiny_mnist, epochs=1, tensorboard=True).override("optim", lr=1e9)
    with pytest.raises(NonFiniteLossError):
        train(cfg, tmp_path / "run", log=lambda line: None)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("k, n, seed", [(10, 500, 0), (3, 40, 1), (47, 300, 2), (2, 9, 3)])
def test_classification_report_is_sklearns_character_for_character(k, n, seed):
    """cnnlab computes the report itself (no scikit-learn import when scoring); it must read the same."""
    from sklearn.metrics import classification_report as sk_report

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    p[p == k - 1] = 0  # one class never predicted (precision 0/0), so zero_division matters
    names = [f"class-{i}" for i in range(k)] if k != 10 else [str(i) for i in range(10)]
    text, raw = M.classification_report(y, p, names, digits=3)
    ids = list(range(k))
    assert text == sk_report(y, p, labels=ids, target_names=names, digits=3, zero_division=0)
    want = sk_report(y, p, labels=ids, target_names=names, output_dict=True, zero_division=0)
    assert raw.keys() == want.keys()
    for key, row in want.items():
        if isinstance(row, dict):
            assert raw[key].keys() == row.keys()
            assert all(raw[key][m] == pytest.approx(v, abs=1e-12) for m, v in row.items()), key
        else:
            assert raw[key] == pytest.approx(row, abs=1e-12)
