"""A faster CPU inference path for LeNet-style networks, with the eager model's exact results.

Evaluation is a third of the lesson's run time (the whole training set and the
validation set after every epoch). For a conv/ReLU/max-pool feature extractor,
running the convolution stack on oneDNN's own tensors (blocked memory layout,
weights reordered once per evaluation) instead of strided PyTorch tensors is
~1.6x faster on a CPU, and the logits are bit-for-bit those of the eager model
in NCHW (tests/test_fastpath.py checks equality, and benchmarks/bench.py
throughput measures the speed).

A ReLU directly followed by a max-pool runs after the pool instead: the two
commute exactly (ReLU is monotone, so the largest value of a window is the same
either way, and so is every output), and ReLU then touches a quarter of the
values: about 1.16x more images per second (benchmarks/README.md, "Evaluation
throughput").

A model opts in by declaring ``inference_parts = ("features", "classifier")``,
a promise that its forward is ``classifier(flatten(features(x)))``. The path is
used only where it is known to be exact: CPU, float32, no autograd, no forward
hooks (the path does not call the modules, so hooks would not run), and a
``features`` made only of Conv2d (zero padding, no groups), ReLU and
MaxPool2d (no padding, dilation or ceil mode). Anything else runs the model
itself.
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


def supports_fast_inference(model: nn.Module) -> bool:
    """Whether :func:`inference_forward` can replace ``model``'s forward exactly."""
    if getattr(model, "inference_parts", None) != ("features", "classifier") or hasattr(model, "_orig_mod"):
        return False  # not declared, or a torch.compile wrapper (which has its own fast path)
    if not torch.backends.mkldnn.is_available():
        return False
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or not isinstance(getattr(model, "classifier", None), nn.Module):
        return False
    for m in features:
        if isinstance(m, nn.Conv2d) and _conv_ok(m):
            continue
        if isinstance(m, nn.ReLU) or (isinstance(m, nn.MaxPool2d) and _pool_ok(m)):
            continue
        return False
    params = list(model.parameters())
    return bool(params) and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params) \
        and not _has_forward_hooks(model)


def _has_forward_hooks(model: nn.Module) -> bool:
    """Whether a forward (pre-)hook is registered on any of ``model``'s modules, or globally."""
    from torch.nn.modules import module as module_mod

    if getattr(module_mod, "_global_forward_hooks", None) or getattr(module_mod, "_global_forward_pre_hooks", None):
        return True
    return any(getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None) for m in model.modules())


def inference_forward(model: nn.Module) -> Forward:
    """A forward function for evaluation, valid until the weights change (build one per evaluation pass).

    Returns ``model`` itself when the fast path does not apply.
    """
    if not supports_fast_inference(model):
        return model
    layers = list(model.features)  # type: ignore[union-attr]
    for i in range(len(layers) - 1):  # ReLU then max-pool == max-pool then ReLU, on 4x fewer values
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    steps: list[Forward] = []
    for m in layers:
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
