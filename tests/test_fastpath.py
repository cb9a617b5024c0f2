"""The oneDNN evaluation path gives exactly the eager model's logits, and only where it applies."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlab.fastpath import inference_forward, supports_fast_inference
from cnnlab.models import create_model


def trained_like_lenet() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("lenet5").eval()
    with torch.no_grad():  # weights that are not the init's symmetric ones
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("channels_last", [False, True])
def test_logits_are_bit_identical_to_the_eager_model(channels_last):
    model = trained_like_lenet()
    x = torch.rand(37, 1, 28, 28)  # an odd batch size, as a last batch is
    with torch.no_grad():
        expected = model(x)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        forward = inference_forward(model)
        assert forward is not model  # the fast path was taken
        got = forward(x)
    if channels_last:  # eager channels-last itself rounds differently from NCHW; compare with it
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert torch.equal(got.argmax(1), expected.argmax(1))
    else:
        assert torch.equal(got, expected)


def test_other_input_sizes_and_channels():
    torch.manual_seed(1)
    model = create_model("lenet5", in_channels=3, image_size=32).eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(inference_forward(model)(x), model(x))


def test_falls_back_where_it_would_not_be_exact():
    assert not supports_fast_inference(create_model("lenet5-classic"))  # tanh / average pooling
    assert not supports_fast_inference(create_model("smallcnn"))  # batch norm; undeclared
    assert not supports_fast_inference(create_model("lenet5").double())
    smallcnn = create_model("smallcnn")
    assert inference_forward(smallcnn) is smallcnn
    model = create_model("lenet5")
    # With autograd on (training) the path hands over to the model itself, so gradients flow.
    forward = inference_forward(model)
    out = forward(torch.rand(2, 1, 28, 28))
    assert out.requires_grad


def test_uses_the_weights_at_build_time_so_build_one_per_pass():
    model = trained_like_lenet()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        before = inference_forward(model)
        model.features[0].weight.mul_(2)
        assert torch.equal(inference_forward(model)(x), model(x))
        assert not torch.equal(before(x), model(x))


def test_relu_after_pooling_gives_the_same_logits_on_digit_like_images():
    # Binary strokes on a zero background: many equal values and zeros in every pooling window,
    # where moving the ReLU after the max-pool must still give exactly the eager model's logits.
    model = trained_like_lenet()
    torch.manual_seed(2)
    x = (torch.rand(64, 1, 28, 28) > 0.8).float()
    x[:8] = 0.0  # blank images: every conv output is its bias
    with torch.no_grad():
        assert torch.equal(inference_forward(model)(x), model(x))


def test_hooks_still_run():
    model = trained_like_lenet()
    seen: list[tuple[int, ...]] = []
    handle = model.features[1].register_forward_hook(lambda mod, inp, out: seen.append(tuple(out.shape)))
    try:
        assert not supports_fast_inference(model)
        with torch.no_grad():
            forward = inference_forward(model)
            forward(torch.rand(3, 1, 28, 28))
        assert seen == [(3, 6, 28, 28)]  # the ReLU ran, before its pool, as the model says
    finally:
        handle.remove()
    assert supports_fast_inference(model)
    # A hook registered after the path was built is honoured too.
    with torch.no_grad():
        forward = inference_forward(model)
        handle = torch.nn.modules.module.register_module_forward_hook(lambda mod, inp, out: seen.append(("global",)))
        try:
            forward(torch.rand(2, 1, 28, 28))
        finally:
            handle.remove()
    assert ("global",) in seen
