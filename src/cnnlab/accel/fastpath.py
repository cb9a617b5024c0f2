"""Faster CPU paths for LeNet-style networks, with the eager model's exact results.

Evaluation is a third of the lesson's run time (the whole training set and the
validation set after every epoch). For a conv/ReLU/max-pool feature extractor,
running the convolution stack on oneDNN's own tensors (blocked memory layout,
weights reordered once per evaluation) instead of strided PyTorch tensors is
faster on a CPU, and the logits are bit-for-bit those of the eager model
in NCHW (tests/test_fastpath.py checks equality, and benchmarks/bench.py
throughput measures the speed).

Both paths, :func:`inference_forward` and :func:`training_forward`, run each
ReLU that is directly followed by a max-pool after that pool instead. The two
commute exactly. ReLU is monotone, so a window's largest value, and therefore
every output, is the same either way. The gradient reaches the same input too:
the window's first largest value, or no input at all when that value is not
positive, because ReLU's gradient is zero there in both orders. ReLU then
touches a quarter of the values (the gain in images per second is in
benchmarks/README.md, "Evaluation throughput"), and training steps give
bit-identical weights (tests/test_fastpath.py).

A model opts in by declaring ``inference_parts = ("features", "classifier")``,
a promise that its forward is ``classifier(flatten(features(x)))``. The paths
are used only where they are known to be exact: on the CPU, with no forward
hooks anywhere (the paths do not call the model itself, so its hooks would not
run), and a ``features`` made only of Conv2d, ReLU and MaxPool2d (no padding,
dilation, ceil mode or returned indices). Evaluation further needs float32, no
autograd and convolutions with zero padding and no groups. Anything else runs
the model itself.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

Forward = Callable[[torch.Tensor], torch.Tensor]


def _conv_ok(m: nn.Conv2d) -> bool:
    return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _pool_ok(m: nn.MaxPool2d) -> bool:
    return _pair(m.padding) == [0, 0] and _pair(m.dilation) == [1, 1] and not m.ceil_mode and not m.return_indices


def _declared_features(model: nn.Module) -> list[nn.Module] | None:
    """``model.features`` as a list when the model declares the two parts and the features are
    only Conv2d, ReLU and plain MaxPool2d; else None."""
    if getattr(model, "inference_parts", None) != ("features", "classifier") or hasattr(model, "_orig_mod"):
        return None  # not declared, or a torch.compile wrapper (which has its own fast path)
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or not isinstance(getattr(model, "classifier", None), nn.Module):
        return None
    if not all(isinstance(m, (nn.Conv2d, nn.ReLU)) or (isinstance(m, nn.MaxPool2d) and _pool_ok(m)) for m in features):
        return None
    return list(features)


def _relu_after_pool(layers: list[nn.Module]) -> list[nn.Module]:
    """``layers`` with every ReLU that directly precedes a MaxPool2d moved after it."""
    layers = list(layers)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return layers


def _has_forward_hooks(model: nn.Module) -> bool:
    """Whether a forward (pre-)hook is registered on any of ``model``'s modules, or globally."""
    from torch.nn.modules import module as module_mod

    if getattr(module_mod, "_global_forward_hooks", None) or getattr(module_mod, "_global_forward_pre_hooks", None):
        return True
    return any(getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None) for m in model.modules())


def supports_fast_inference(model: nn.Module) -> bool:
    """Whether :func:`inference_forward` can replace ``model``'s forward exactly."""
    layers = _declared_features(model)
    if layers is None or not torch.backends.mkldnn.is_available():
        return False
    if not all(_conv_ok(m) for m in layers if isinstance(m, nn.Conv2d)):
        return False
    params = list(model.parameters())
    return bool(params) and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params) \
        and not _has_forward_hooks(model)


def training_forward(model: nn.Module) -> Forward:
    """``model``'s forward for training steps, with each ReLU run after the max-pool that follows it.

    Values and gradients are those of ``model(x)`` bit for bit. Returns ``model``
    itself when the model does not declare its parts or has no ReLU/max-pool pair;
    the returned function falls back to ``model(x)`` off the CPU or while hooks are registered.
    """
    declared = _declared_features(model)
    layers = _relu_after_pool(declared) if declared is not None else None
    if layers is None or layers == declared:
        return model
    classifier = model.classifier  # type: ignore[union-attr]

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or _has_forward_hooks(model):
            return model(x)
        for m in layers:
            x = m(x)
        return classifier(torch.flatten(x, 1))

    return forward


def inference_forward(model: nn.Module) -> Forward:
    """A forward function for evaluation, valid until the weights change (build one per evaluation pass).

    Returns ``model`` itself when the fast path does not apply.
    """
    if not supports_fast_inference(model):
        return model
    steps: list[Forward] = []
    for m in _relu_after_pool(list(model.features)):  # type: ignore[union-attr]
        if isinstance(m, nn.Conv2d):
            steps.append(_conv_step(m))
        elif isinstance(m, nn.ReLU):
            steps.append(torch.relu)
        else:
            k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
            steps.append(lambda z, k=k, s=s: torch.mkldnn_max_pool2d(z, list(k), list(s)))
    classifier = model.classifier  # type: ignore[union-attr]

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32 or _has_forward_hooks(model):
            return model(x)  # training, an input the path was not built for, or hooks that must run
        z = x.contiguous().to_mkldnn()
        for step in steps:
            z = step(z)
        return classifier(torch.flatten(z.to_dense(), 1))

    return forward


def _pair(v: int | tuple[int, ...]) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def _conv_step(m: nn.Conv2d) -> Forward:
    padding, stride, dilation = _pair(m.padding), _pair(m.stride), _pair(m.dilation)  # type: ignore[arg-type]
    # Reordering the weights into oneDNN's blocked layout once per pass, not once per batch, is
    # where much of the gain is.
    weight = torch._C._nn.mkldnn_reorder_conv2d_weight(m.weight.detach().to_mkldnn(), padding, stride, dilation, 1)
    bias = m.bias.detach().to_mkldnn() if m.bias is not None else None

    def conv(z: torch.Tensor) -> torch.Tensor:
        return torch.mkldnn_convolution(z, weight, bias, padding, stride, dilation, 1)

    return conv
