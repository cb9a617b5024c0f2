"""The oneDNN evaluation path gives exactly the eager model's logits, and only where it applies."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlab.core.config import OptimConfig
from cnnlab.engine.step import build_optimizer, create_train_step
from cnnlab.accel.fastpath import inference_forward, supports_fast_inference, training_forward
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


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_steps_give_bit_identical_weights(channels_last):
    """The trainer's step (ReLU after each max-pool) against the lesson's plain eager step."""
    def steps(use_trainer: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = create_model("lenet5")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = build_optimizer(OptimConfig(), model.parameters(), torch.device("cpu"))
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        step = create_train_step(model, opt, loss_fn)
        gen = torch.Generator().manual_seed(1)
        for i in range(20):
            x = (torch.rand(32, 1, 28, 28, generator=gen) > 0.8).float()  # strokes on zeros: ties everywhere
            x[:4] = 0.0
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (32,), generator=gen)
            if use_trainer:
                step(None, (x, y))  # type: ignore[arg-type]
            else:
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
        return [p.detach().clone() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(steps(True), steps(False)))


def test_training_forward_applies_only_where_it_is_exact():
    smallcnn = create_model("smallcnn")
    assert training_forward(smallcnn) is smallcnn  # not declared
    classic = create_model("lenet5-classic")
    assert training_forward(classic) is classic  # no ReLU/max-pool pair
    model = create_model("lenet5")
    forward = training_forward(model)
    assert forward is not model
    seen: list[str] = []
    handle = model.features[1].register_forward_hook(lambda mod, inp, out: seen.append("relu"))
    try:
        out = forward(torch.rand(2, 1, 28, 28))
    finally:
        handle.remove()
    assert seen == ["relu"] and out.requires_grad  # with a hook, the model itself ran


# --- evaluation on the idle cores (cnnlab.accel.workers) ---------------------------------------------


def _digit_like_set(n: int = 700):
    from cnnlab.data.tensors import ImageSet

    g = torch.Generator().manual_seed(1)
    images = (torch.rand(n, 1, 28, 28, generator=g) > 0.8).to(torch.uint8) * 255  # binary: full of ties
    return ImageSet(images, torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])


@pytest.mark.parametrize("tta", [0, 1])
def test_threaded_evaluation_gives_the_same_logits_bit_for_bit(tta, monkeypatch):
    from cnnlab.accel import workers
    from cnnlab.inference import predict_logits
    from cnnlab.models.tta import ShiftTTA

    model = trained_like_lenet()
    model = ShiftTTA(model, tta) if tta else model
    data = _digit_like_set()
    monkeypatch.setattr(workers, "available_cores", lambda: 1)
    one = predict_logits(model, data, batch_size=64)
    monkeypatch.setattr(workers, "available_cores", lambda: 3 * torch.get_num_threads())
    assert workers.eval_workers(model) == 3  # the threaded path is the one compared
    assert torch.equal(predict_logits(model, data, batch_size=64), one)


def test_threaded_evaluator_gives_the_same_metrics():
    from cnnlab.data.tensors import TensorBatches
    from cnnlab.engine.step import create_evaluator

    model, data = trained_like_lenet(), _digit_like_set()
    batches = TensorBatches(data, 64)
    one = create_evaluator(model, workers=1).evaluate(batches)
    assert create_evaluator(model, workers=3).evaluate(batches) == one
    assert model.training is False  # evaluate() put the model in eval mode


def test_forwarded_keeps_the_order_and_length():
    import time

    from cnnlab.accel.workers import Forwarded

    batches = [(torch.full((1,), float(i)), i) for i in range(9)]

    def slow_for_even(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02 if int(x) % 2 == 0 else 0.0)  # even batches finish last
        return x * 2

    out = list(Forwarded(slow_for_even, batches, workers=3))
    assert len(Forwarded(slow_for_even, batches, workers=3)) == 9
    assert [(float(x), y) for x, y in out] == [(2.0 * i, i) for i in range(9)]


def test_only_known_modules_without_hooks_are_shared_between_threads(monkeypatch):
    from cnnlab.accel import workers

    monkeypatch.setattr(workers, "available_cores", lambda: 4)
    threads = torch.get_num_threads()
    lenet = create_model("lenet5")
    assert workers.eval_workers(lenet) == max(1, min(workers.MAX_WORKERS, 4 // threads))

    class Mine(nn.Module):  # the user's own class: its forward may keep state
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    assert workers.eval_workers(Mine()) == 1
    handle = lenet.features[0].register_forward_hook(lambda *args: None)
    assert workers.eval_workers(lenet) == 1  # a hook must see every call, one at a time
    handle.remove()
