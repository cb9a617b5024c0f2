"""Layer arithmetic against PyTorch's own shapes, the model summary, and the layers/models commands."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from cnnlab.apps.cli import cli
from cnnlab.models.shapes import ShapeError, conv_output_size, pool_output_size, pooling_example
from cnnlab.models.summary import parse_shape, summarize, summarize_model


def torch_side(layer: nn.Module, size: int) -> int | None:
    """PyTorch's output side, or None where PyTorch refuses the input."""
    try:
        with torch.no_grad():
            out = layer(torch.zeros(1, 1, size, size))
    except RuntimeError:
        return None
    return None if out.numel() == 0 else out.shape[-1]


def ours(fn, *args) -> int | None:
    try:
        return fn(*args)
    except ShapeError:
        return None


@pytest.mark.parametrize("size", [1, 3, 5, 8, 28])
def test_conv_arithmetic_matches_pytorch(size):
    for k, s, p, d in itertools.product([1, 2, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2]):
        conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
        assert ours(conv_output_size, size, k, s, p, d) == torch_side(conv, size), (size, k, s, p, d)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 28])
@pytest.mark.parametrize("ceil", [False, True])
def test_pool_arithmetic_matches_pytorch(size, ceil):
    for k, s, p, d in itertools.product([1, 2, 3], [1, 2, 3], [0, 1, 2], [1, 2]):
        mp = nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        assert ours(pool_output_size, size, k, s, p, d, ceil) == torch_side(mp, size), ("max", size, k, s, p, d)
        if d == 1:
            ap = nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil)
            assert ours(pool_output_size, size, k, s, p, 1, ceil) == torch_side(ap, size), ("avg", size, k, s, p)


def test_impossible_shapes_are_clear_errors():
    with pytest.raises(ShapeError, match="spans 5 pixels, more than the 4-pixel input"):
        conv_output_size(4, 5)
    with pytest.raises(ShapeError, match="stride must be a whole number >= 1"):
        conv_output_size(28, 3, stride=0)
    with pytest.raises(ShapeError, match="more than half"):
        pool_output_size(28, 2, padding=2)
    with pytest.raises(ShapeError, match="does not fit"):
        pool_output_size(1, 2)
    with pytest.raises(ShapeError, match="like 1x28x28"):
        parse_shape("28x28")


def test_lenet5_summary_is_the_lessons_arithmetic():
    s = summarize_model("lenet5", (1, 28, 28))
    assert s.total_macs == 416_520 and s.total_params == 61_706
    by_name = {r.name: r for r in s.rows}
    assert by_name["features.0"].output_shape == (6, 28, 28) and by_name["features.0"].macs == 28 * 28 * 6 * 25
    assert by_name["features.5"].output_shape == (16, 5, 5)
    assert by_name["classifier.0"].macs == 400 * 120
    assert "416,520" in s.to_text()


def test_summary_counts_grouped_convs_and_shared_params():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    s = summarize(model, (4, 6, 6))
    assert s.rows[0].macs == 8 * 6 * 6 * (4 // 2) * 9
    assert s.total_params == sum(p.numel() for p in model.parameters())


def test_pooling_example_is_computed():
    text = pooling_example()
    assert "max 6, mean 3.75" in text and "max 9, mean 4.5" in text


def test_layers_and_models_commands():
    runner = CliRunner()
    r = runner.invoke(cli, ["layers", "lenet5"])
    assert r.exit_code == 0 and "416,520" in r.output
    r = runner.invoke(cli, ["layers", "--conv", "5", "--padding", "2", "--size", "28"])
    assert r.exit_code == 0 and "-> 28x28" in r.output
    r = runner.invoke(cli, ["layers", "--pool", "2", "--size", "28"])
    assert r.exit_code == 0 and "-> 14x14" in r.output and "AvgPool2d(2)" in r.output
    r = runner.invoke(cli, ["layers", "--conv", "7", "--size", "5"])
    assert r.exit_code == 2 and r.output.startswith("error: a 7x7 kernel") and "Traceback" not in r.output
    r = runner.invoke(cli, ["layers", "lenet5", "--input", "1x8x8"])
    assert r.exit_code == 2 and "at least 12x12" in r.output
    r = runner.invoke(cli, ["models", "--dataset", "cifar100"])
    assert r.exit_code == 0 and "3x32x32 input, 100 classes" in r.output and "resnet18" in r.output
