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
    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "-o", str(tmp_path / "v")])
    assert r.exit_code == 0, r.output
    assert "filters.png" in r.output and (tmp_path / "v" / "maps_02_features_3.png").is_file()
    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "--index", "100000"])
    assert r.exit_code == 2 and "index must be between 0 and 199" in r.output and "--index" in r.output
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


def test_visualize_explains_your_own_image_and_prints_numbers_as_json(lenet_run, tmp_path):
    import json

    import numpy as np

    pixels = np.zeros((56, 56), np.uint8)
    pixels[10:46, 24:32] = 255  # a "1", white on black
    Image.fromarray(pixels).save(tmp_path / "one.png")
    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "--image", str(tmp_path / "one.png"),
                                 "-o", str(tmp_path / "mine")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mine" / "attribution.png").is_file() and (tmp_path / "mine" / "kernel_02_features_3.png").is_file()

    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "--index", "5", "--target", "3",
                                 "--json", "-o", str(tmp_path / "none")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["source"] == {"test_index": 5} and doc["target"] == {"label": "3", "index": 3}
    assert [layer["name"] for layer in doc["layers"]][:3] == ["features.0", "features.1", "features.2"]
    assert len(doc["layers"][0]["channel_max"]) == 6 and doc["layers"][0]["shape"] == [6, 28, 28]
    values = np.array(doc["attribution"]["values"])
    assert values.shape == (28, 28) and values.sum() == pytest.approx(doc["attribution"]["sum"], abs=1e-3)
    assert not (tmp_path / "none").exists()  # --json writes nothing

    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "--index", "1", "--image", str(tmp_path / "one.png")])
    assert r.exit_code == 2 and "not both" in r.output
    (tmp_path / "bad.png").write_bytes(b"not an image")
    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "--image", str(tmp_path / "bad.png")])
    assert r.exit_code == 2 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["visualize", str(lenet_run), "--target", "eleven"])
    assert r.exit_code == 2 and "target must be a class name" in r.output
