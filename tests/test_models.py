from __future__ import annotations

import pytest
import torch

from cnnlab.core.errors import ConfigError
from cnnlab.models import create_model, list_models

# The module tree the lesson prints for its Lenet5.
LESSON_REPR = """Lenet5(
  (features): Sequential(
    (0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
    (1): ReLU()
    (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
    (3): Conv2d(6, 16, kernel_size=(5, 5), stride=(1, 1))
    (4): ReLU()
    (5): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  )
  (classifier): Sequential(
    (0): Linear(in_features=400, out_features=120, bias=True)
    (1): ReLU()
    (2): Linear(in_features=120, out_features=84, bias=True)
    (3): ReLU()
    (4): Linear(in_features=84, out_features=10, bias=True)
  )
)"""


def test_lenet5_is_the_lessons_network():
    model = create_model("lenet5")
    assert repr(model) == LESSON_REPR
    assert sum(p.numel() for p in model.parameters()) == 61_706
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)


def test_lenet5_matches_the_lessons_forward():
    # Same weights in the lesson's own formulation (view(-1, 400)) give the same logits.
    model = create_model("lenet5")
    x = torch.rand(3, 1, 28, 28)
    z = model.features(x).view(-1, 16 * 5 * 5)
    assert torch.equal(model.classifier(z), model(x))


def test_registry_lists_and_rejects():
    assert "lenet5" in list_models()
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        create_model("nope")


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_runs_forward_and_backward(name, shape):
    c, h, _ = shape
    model = create_model(name, in_channels=c, num_classes=7, image_size=h)
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
