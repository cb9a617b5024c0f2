"""cnnlab visualize: filter and feature-map PNGs from a trained run."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnlab.apps.cli import cli
from cnnlab.core.errors import RunDirError
from cnnlab.models import create_model
from cnnlab.analysis.explain import conv_activations
from cnnlab.analysis.report import visualize_run
from cnnlab.analysis.figures import feature_maps_figure, filters_figure
from conftest import train_tiny_run


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, tiny_mnist):
    return train_tiny_run(tiny_mnist, tmp_path_factory.mktemp("runs") / "lenet", epochs=1, train_eval=False)


def test_visualize_writes_filters_and_each_conv_layers_maps(lenet_run, tmp_path):
    paths = visualize_run(lenet_run, tmp_path / "vis", index=3)
    names = [p.name for p in paths]
    assert names == ["filters.png", "input.png", "maps_01_features_0.png", "maps_02_features_3.png", "layers.png",
                     "attribution.png", "kernel_01_features_0.png", "kernel_02_features_3.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100


def test_visualize_command_and_errors(lenet_run, tmp_path):
    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "--out", str(tmp_path / "v")])
    assert r.exit_code == 0, r.output
    assert "filters.png" in r.output and (tmp_path / "v" / "maps_02_features_3.png").is_file()
    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "--index", "100000"])
    assert r.exit_code == 2 and "--index must be between 0 and 199" in r.output
    with pytest.raises(RunDirError):
        visualize_run(tmp_path / "missing")


def test_activations_follow_forward_order_for_classic_models():
    model = create_model("resnet18", in_channels=3, num_classes=5, image_size=32)
    acts = conv_activations(model, torch.rand(1, 3, 32, 32))
    assert acts[0][0] == "net.conv1" and acts[0][1].shape == (64, 32, 32)
    assert acts[-1][0] == "__logits__" and acts[-1][1].shape == (5,)


def test_figures_for_rgb_and_grey_filters():
    assert filters_figure(torch.randn(8, 3, 5, 5)).axes
    assert filters_figure(torch.randn(4, 2, 3, 3)).axes
    fig = feature_maps_figure(torch.rand(40, 7, 7), "x", max_maps=10)
    assert "first 10 of 40" in fig._suptitle.get_text()
