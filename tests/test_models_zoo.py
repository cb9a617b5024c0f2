"""Every registered model, for every dataset's input shape; pretrained weights from a local file."""
from __future__ import annotations

import urllib.error

import pytest
import torch
from click.testing import CliRunner

from cnnlab.apps.cli import cli
from cnnlab.data.sets import SHAPES
from cnnlab.core.errors import CnnlabError, ConfigError
from cnnlab.models import check_pretrained, create_model, list_models, supports_pretrained


def _dataset_shapes() -> list[tuple[str, int, int, int]]:
    """One case per (channels, side), with the largest class count among its datasets."""
    groups: dict[tuple[int, int], list[str]] = {}
    for name, (c, s, _) in SHAPES.items():
        groups.setdefault((c, s), []).append(name)
    return [("+".join(names), c, s, max(SHAPES[n][2] for n in names)) for (c, s), names in groups.items()]


@pytest.mark.parametrize("datasets, channels, side, classes", _dataset_shapes(), ids=lambda v: str(v))
@pytest.mark.parametrize("name", list_models())
def test_model_forward_backward_for_dataset_shape(name, datasets, channels, side, classes):
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, num_classes=classes, image_size=side)
    model.train()
    out = model(torch.rand(2, channels, side, side))
    assert out.shape == (2, classes) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:3]}"


def test_registry_has_the_issue_models():
    for name in ("lenet5", "lenet5-classic", "smallcnn", "alexnet", "vgg11", "googlenet", "resnet18"):
        assert name in list_models()
    classic = create_model("lenet5-classic")
    assert sum(p.numel() for p in classic.parameters()) == 61_706
    kinds = {type(m).__name__ for m in classic.modules()}
    assert {"Tanh", "AvgPool2d"} <= kinds and "ReLU" not in kinds and "MaxPool2d" not in kinds


def test_classic_models_fit_tiny_images_by_dropping_pools():
    model = create_model("vgg11", in_channels=1, num_classes=3, image_size=8)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="at least 8x8"):
        create_model("resnet18", image_size=4)


def _fake_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_pretrained_weights_load_through_torchvisions_weights_api(tmp_path, monkeypatch):
    import torchvision

    folder = _fake_hub(tmp_path, monkeypatch)
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    # The file name torchvision's ResNet18_Weights.DEFAULT looks for in $TORCH_HOME/hub/checkpoints.
    torch.save(reference.state_dict(), folder / "resnet18-f37072fd.pth")

    def no_network(*args, **kwargs):
        raise AssertionError("must not download a file that is already there")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = create_model("resnet18", in_channels=1, num_classes=5, image_size=28, pretrained=True)
    net = model.net
    assert torch.equal(net.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(net.bn1.running_var, reference.bn1.running_var)
    # One grey channel: the RGB kernels summed, so a grey image answers as its RGB copy does.
    assert torch.allclose(net.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    assert net.fc.out_features == 5 and net.conv1.stride == (1, 1)
    grey = torch.rand(1, 1, 28, 28)
    scratch = create_model("resnet18", in_channels=1, num_classes=5, image_size=28)
    scratch.load_state_dict(model.state_dict())  # a pretrained model's checkpoint fits the plain architecture
    assert torch.equal(scratch.eval()(grey), model.eval()(grey))


def test_pretrained_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    folder = _fake_hub(tmp_path, monkeypatch)

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CnnlabError, match=rf"resnet18.*no internet.*copy resnet18-f37072fd.pth into {folder}"):
        create_model("resnet18", pretrained=True)


def test_pretrained_only_for_classic_models(tiny_mnist, tmp_path):
    assert supports_pretrained("vgg11") and not supports_pretrained("lenet5")
    with pytest.raises(ConfigError, match="'smallcnn' has no pretrained weights; these do: alexnet"):
        check_pretrained("smallcnn")
    r = CliRunner().invoke(cli, ["train", "--pretrained", "--data-dir", str(tiny_mnist), "--run-dir",
                                 str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 2 and "'lenet5' has no pretrained weights" in r.output
