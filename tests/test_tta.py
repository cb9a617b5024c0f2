"""Test-time augmentation with small shifts ([model] tta_shift): what it computes, and that a run
trained with it answers with it everywhere (test score, evaluate, predict) but draws the bare network."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.service.training import train_config
from cnnlab.core.errors import ConfigError
from cnnlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from cnnlab.models import create_model
from cnnlab.models.tta import ShiftTTA, shifted_views
from conftest import tiny_run_config


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` with its content moved by (dy, dx), zero filled: the definition, written the slow way."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[..., i, j] = x[..., i - dy, j - dx]
    return out


@pytest.mark.parametrize("p", [1, 2])
def test_shifted_views_are_the_image_and_its_four_shifts(p: int) -> None:
    x = torch.rand(3, 1, 7, 6)
    want = torch.cat([x, shift(x, 0, p), shift(x, 0, -p), shift(x, p, 0), shift(x, -p, 0)])
    assert torch.equal(shifted_views(x, p), want)


def test_shift_tta_averages_the_softmax_of_the_views() -> None:
    torch.manual_seed(0)
    net = create_model("lenet5").eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        got = ShiftTTA(net, 1)(x)
        probs = net(shifted_views(x, 1)).softmax(1).view(5, 4, 10).mean(0)
    assert torch.allclose(got.exp(), probs, atol=1e-6)
    assert torch.allclose(got.exp().sum(1), torch.ones(4), atol=1e-5)


def test_a_tta_run_answers_with_it_everywhere(tiny_mnist: Path, tmp_path: Path) -> None:
    cfg = tiny_run_config(tiny_mnist, epochs=1).override("model", tta_shift=1)
    result = train_config(cfg, tmp_path / "run", log=lambda _m: None)
    payload = load_checkpoint(tmp_path / "run" / "best.pt")
    model = model_from_checkpoint(payload)
    assert isinstance(model, ShiftTTA) and model.pixels == 1
    assert not isinstance(model_from_checkpoint(payload, tta=False), ShiftTTA)

    from cnnlab.data.registry import load_dataset

    _, test, _ = load_dataset("mnist", tiny_mnist, download=False)
    with torch.no_grad():
        preds = model.eval()(test.images.float() / 255).argmax(1)
    assert result.test.accuracy == pytest.approx(float((preds == test.labels).float().mean()))

    import cnnlab

    predictor = cnnlab.load(tmp_path / "run")
    assert isinstance(predictor.model, ShiftTTA)


def test_tta_shift_is_checked() -> None:
    from cnnlab.core.config import Config

    with pytest.raises(ConfigError, match="tta_shift"):
        Config().override("model", tta_shift=9).validate()


def test_tta_takes_the_exact_fast_path_for_its_views() -> None:
    """inference.eval_forward runs the five views through the network's fast path: same logits, bit for bit."""
    from cnnlab.inference import eval_forward, set_speed_paths

    torch.manual_seed(1)
    tta = ShiftTTA(create_model("lenet5"), 1).eval()
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        fast = eval_forward(tta)(x)
        previous = set_speed_paths(False)
        try:
            plain = eval_forward(tta)(x)
        finally:
            set_speed_paths(previous)
    assert fast is not plain and torch.equal(fast, plain)
