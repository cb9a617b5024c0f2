"""See inside a network: every layer's output for one image, and which pixels drove its prediction.

::

    ex = cnnlab.explain(run, image)         # a run folder, a Predictor or any nn.Module
    ex.prediction                           # Predicted(label='7', index=7, probability=0.998)
    list(ex.activations)                    # ['features.0', 'features.1', 'features.2', ...]: the model's own names
    ex.activations["features.0"].shape      # torch.Size([6, 28, 28])
    ex.attribution                          # (H, W): + pushed towards the class, - away from it
    ex.plot_layers(); ex.plot_attribution(); ex.plot_kernel("features.3", 5)   # InlineFigures

What is recorded: the output of every *module* that is a convolution, a pooling layer, an
activation (``nn.ReLU``, ``nn.Tanh``, ...) or a linear layer, in the order the forward pass calls
them, through forward hooks. Names are those of ``model.named_modules()``; a module called twice
records ``name:2`` for its second call. Operations written as functions in ``forward``
(``F.relu(x)``, ``torch.flatten``) are not modules and cannot be hooked, so they have no entry:
the layer before them shows its own output (a conv followed by ``F.relu`` shows the conv's output,
before the ReLU). Outputs are copied when recorded, so an ``inplace=True`` ReLU after a conv does
not overwrite the conv's map.

Attribution is computed with captum (see :data:`METHODS`). The default, Integrated Gradients from an
all-zero (black, blank-canvas) input, gives signed per-pixel evidence at the input's resolution
whose sum equals the change in the class's logit from the blank input to this one; it costs one
batched forward and backward pass of ``steps`` images.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from cnnlab.analysis.figures import feature_maps_figure, filters_figure, input_figure, new_figure, overlay_attribution
from cnnlab.core.errors import CnnlabError, ConfigError
from cnnlab.core.files import save_figure
from cnnlab.core.i18n import _

KINDS = ("conv", "pool", "activation", "linear")
METHODS = ("integrated_gradients", "saliency", "gradcam")
DEFAULT_STEPS = 16  # Integrated Gradients' path samples: enough for MNIST-sized nets (see docs/analysis.md)


class MissingExtraError(CnnlabError):
    """A feature whose optional library is not installed."""


def layer_kind(module: nn.Module) -> str | None:
    """'conv', 'pool', 'activation', 'linear' or None (not recorded)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        return "linear"
    home = type(module).__module__
    if home == "torch.nn.modules.pooling":
        return "pool"
    if home == "torch.nn.modules.activation" and not isinstance(module, nn.MultiheadAttention):
        return "activation"
    return None


@dataclass(frozen=True)
class Predicted:
    """The class an explanation is about: its name, index and probability."""

    label: str
    index: int
    probability: float


@dataclass
class Explanation:
    """One image through one model, computed once by :func:`explain`.

    ``activations``: layer name -> that layer's output for this image (batch dimension dropped), in
    forward order; ``kinds``: layer name -> 'conv', 'pool', 'activation' or 'linear';
    ``layer_inputs``: conv layer name -> the input it received (for :meth:`kernel`);
    ``attribution``: (H, W) evidence per input pixel for ``target``; ``input``: the (C, H, W) tensor
    the model saw.
    """

    model: nn.Module
    input: torch.Tensor
    activations: "OrderedDict[str, torch.Tensor]"
    kinds: dict[str, str]
    layer_inputs: dict[str, torch.Tensor]
    modules: dict[str, nn.Module]
    logits: torch.Tensor
    classes: list[str]
    target: int
    attribution: torch.Tensor
    method: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        p = self.prediction
        return (f"Explanation(prediction={p.label!r} ({p.probability:.3f}), layers={len(self.activations)}, "
                f"attribution={self.method} for {self.classes[self.target]!r})")

    @property
    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), 0)

    @property
    def prediction(self) -> Predicted:
        """The predicted (highest-probability) class."""
        probs = self.probabilities
        i = int(probs.argmax())
        return Predicted(self.classes[i], i, float(probs[i]))

    def layers(self, kinds: Sequence[str] = KINDS) -> list[str]:
        """Names of the recorded layers of the given kinds, in forward order."""
        return [name for name in self.activations if self.kinds[name] in kinds]

    def maps(self, kinds: Sequence[str] = ("conv", "pool")) -> "OrderedDict[str, torch.Tensor]":
        """The (C, H, W) feature maps of the spatial layers of ``kinds``, in forward order."""
        return OrderedDict((n, self.activations[n]) for n in self.layers(kinds) if self.activations[n].dim() == 3)

    # --- the arithmetic of one output value ----------------------------------------------------

    def kernel(self, layer: str, channel: int, position: tuple[int, int] | None = None) -> dict[str, Any]:
        """How conv ``layer`` computed output ``channel`` at ``position`` (row, column of its output map).

        Returns the window of the layer's input under the kernel (in_channels, kh, kw), the kernel's
        weights (same shape), the bias, the sum of products and the recorded output there: the
        arithmetic CNN Explainer shows. ``position`` defaults to where the map is largest.
        """
        module = self._conv(layer)
        maps = self.activations[layer]
        if not 0 <= channel < maps.shape[0]:
            raise ConfigError(_("channel must be between 0 and {last} for layer {layer}, got {channel}").format(
                last=maps.shape[0] - 1, layer=layer, channel=channel))
        if position is None:
            flat = int(maps[channel].argmax())
            position = (flat // maps.shape[2], flat % maps.shape[2])
        r, c = int(position[0]), int(position[1])
        if not (0 <= r < maps.shape[1] and 0 <= c < maps.shape[2]):
            raise ConfigError(_("position must be inside the {h}x{w} map of {layer}, got ({r}, {c})").format(
                h=maps.shape[1], w=maps.shape[2], layer=layer, r=r, c=c))
        x = self.layer_inputs[layer]
        (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
        ph, pw = module.padding if not isinstance(module.padding, str) else _same_padding(module)
        padded = torch.nn.functional.pad(x, (pw, pw, ph, ph))
        top, left = r * sh, c * sw  # in padded coordinates
        window = padded[:, top : top + dh * (kh - 1) + 1 : dh, left : left + dw * (kw - 1) + 1 : dw]
        weight = module.weight[channel].detach().float().cpu()
        bias = float(module.bias[channel].detach()) if module.bias is not None else 0.0
        products = window * weight
        total = float(products.sum())
        return {
            "layer": layer, "channel": channel, "position": (r, c),
            "input_origin": (top - ph, left - pw),  # the window's top-left in the layer input (may be < 0: padding)
            "window": window, "weight": weight, "bias": bias, "products": products,
            "sum": total, "value": total + bias, "recorded": float(maps[channel, r, c]),
        }

    def _conv(self, layer: str) -> nn.Conv2d:
        module = self.modules.get(layer.split(":")[0])
        if not isinstance(module, nn.Conv2d) or layer not in self.layer_inputs:
            convs = ", ".join(n for n in self.layers(("conv",)) if isinstance(self.modules.get(n), nn.Conv2d))
            raise ConfigError(_("{layer!r} is not a 2-D convolution of this model; its conv layers: {convs}").format(
                layer=layer, convs=convs or _("none")))
        if module.groups != 1:
            raise ConfigError(_("{layer!r} is a grouped convolution; the kernel view shows ordinary ones").format(
                layer=layer))
        return module

    # --- numbers for JSON ----------------------------------------------------------------------

    def summary(self, values: bool = False) -> dict[str, Any]:
        """Plain numbers: the prediction, each layer's kind, shape, range (and each channel's maximum for maps),
        the attribution's range; ``values=True`` adds the attribution map itself (H lists of W numbers)."""
        p = self.prediction
        a = self.attribution
        return {
            "prediction": {"label": p.label, "index": p.index, "probability": p.probability},
            "probabilities": {c: float(v) for c, v in zip(self.classes, self.probabilities)},
            "target": {"label": self.classes[self.target], "index": self.target},
            "layers": [
                {"name": n, "kind": self.kinds[n], "type": type(self.modules[n.split(":")[0]]).__name__,
                 "shape": list(t.shape), "min": float(t.min()), "max": float(t.max()), "mean": float(t.float().mean()),
                 **({"channel_max": [float(v) for v in t.flatten(1).amax(1)]} if t.dim() == 3 else {})}
                for n, t in self.activations.items()
            ],
            "attribution": {"method": self.method, "shape": list(a.shape), "min": float(a.min()),
                            "max": float(a.max()), "sum": float(a.sum()),
                            **({"values": [[round(float(v), 6) for v in row] for row in a]} if values else {})},
        }

    # --- files ---------------------------------------------------------------------------------

    def save(self, folder: str | Path, *, caption: str | None = None, max_maps: int = 32) -> list[Path]:
        """Write the explanation as PNGs into ``folder``; returns the paths, in this order.

        filters.png (the first conv layer's kernels), input.png, maps_NN_<layer>.png (each conv
        layer's maps), layers.png (every conv and pool layer), attribution.png, and
        kernel_NN_<layer>.png (each 2-D conv's kernel and arithmetic for its most active channel).
        """
        out = Path(folder)
        written: list[Path] = []

        def put(fig: Any, name: str) -> None:
            save_figure(fig, out / name)
            written.append(out / name)

        convs = [n for n in self.layers(("conv",)) if n in self.layer_inputs and self.activations[n].dim() == 3]
        if convs:
            w = self.modules[convs[0].split(":")[0]].weight
            put(filters_figure(w, _("{layer} filters").format(layer=convs[0])), "filters.png")
        p = self.prediction
        put(input_figure(self.input, caption or _("predicted {label} ({prob})").format(
            label=p.label, prob=f"{p.probability:.0%}")), "input.png")
        for k, name in enumerate(convs, start=1):
            put(feature_maps_figure(self.activations[name], _("after {layer}").format(layer=name), max_maps),
                f"maps_{k:02d}_{safe_name(name)}.png")
        put(self.plot_layers(max_maps=min(max_maps, 16)), "layers.png")
        put(self.plot_attribution(), "attribution.png")
        for k, name in enumerate(convs, start=1):
            if self.modules[name.split(":")[0]].groups == 1:
                channel = int(self.activations[name].flatten(1).amax(1).argmax())
                put(self.plot_kernel(name, channel), f"kernel_{k:02d}_{safe_name(name)}.png")
        return written

    # --- figures -------------------------------------------------------------------------------

    def plot_layers(self, kinds: Sequence[str] = ("conv", "pool"), max_maps: int = 16) -> Any:
        """The input, then one row per conv/pool layer: up to ``max_maps`` channels, each its own scale."""
        maps = self.maps(kinds)
        cols = max([min(max_maps, m.shape[0]) for m in maps.values()] + [1])
        rows = 1 + len(maps)
        fig = new_figure(1.05 * cols + 1.6, 1.2 * rows + 0.6)
        axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
        for ax in axes.ravel():
            ax.set_axis_off()
        _show_input(axes[0, 0], self.input)
        p = self.prediction
        axes[0, 0].set_title(_("input: {label} ({prob})").format(label=p.label, prob=f"{p.probability:.0%}"),
                             fontsize=8)
        for r, (name, m) in enumerate(maps.items(), start=1):
            shown = min(max_maps, m.shape[0])
            for c in range(shown):
                axes[r, c].imshow(m[c].float().cpu().numpy(), cmap="viridis", interpolation="nearest")
                axes[r, c].set_title(str(c), fontsize=7)
            label = f"{name}\n{type(self.modules[name.split(':')[0]]).__name__}\n{'x'.join(map(str, m.shape))}"
            axes[r, 0].text(-0.12, 0.5, label, fontsize=7, ha="right", va="center", transform=axes[r, 0].transAxes)
        fig.suptitle(_("Feature maps of each conv and pool layer (each map on its own colour scale)"), fontsize=10)
        fig.tight_layout()
        return fig

    def plot_attribution(self) -> Any:
        """The input, the attribution (red for, blue against the class) and the two overlaid."""
        fig = new_figure(9.0, 3.4)
        axes = fig.subplots(1, 3)
        a = self.attribution.float().cpu().numpy()
        vmax = float(np.abs(a).max()) or 1.0
        _show_input(axes[0], self.input)
        axes[0].set_title(_("input"), fontsize=9)
        im = axes[1].imshow(a, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        axes[1].set_title(_("attribution ({method})").format(method=self.method), fontsize=9)
        fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
        _show_input(axes[2], self.input)
        overlay_attribution(axes[2], a)
        axes[2].set_title(_("overlay"), fontsize=9)
        for ax in axes:
            ax.set_axis_off()
        fig.suptitle(_("Which pixels drove the class {label}").format(label=self.classes[self.target]), fontsize=10)
        fig.tight_layout()
        return fig

    def plot_kernel(self, layer: str, channel: int, position: tuple[int, int] | None = None) -> Any:
        """Conv ``layer``'s kernel for output ``channel`` and the arithmetic at one output position.

        Top row: the layer's input channels with the kernel's window boxed; middle: the kernel's
        weights per input channel; bottom: the output map with the position marked, and the sum.
        """
        from matplotlib.patches import Rectangle  # matplotlib is imported when a figure is drawn

        k = self.kernel(layer, channel, position)
        x = self.layer_inputs[layer]
        n_in = min(x.shape[0], 8)
        window, weight = k["window"], k["weight"]
        fig = new_figure(1.6 * max(n_in, 2) + 0.6, 6.2)
        axes = np.atleast_2d(fig.subplots(3, max(n_in, 2), squeeze=False))
        for ax in axes.ravel():
            ax.set_axis_off()
        kh, kw = weight.shape[1:]
        top, left = k["input_origin"]
        vmax = float(weight.abs().max()) or 1.0
        for i in range(n_in):
            axes[0, i].imshow(x[i].numpy(), cmap="gray", interpolation="nearest")
            dh, dw = self._conv(layer).dilation
            axes[0, i].add_patch(Rectangle((left - 0.5, top - 0.5), dw * (kw - 1) + 1, dh * (kh - 1) + 1, fill=False,
                                           edgecolor="#f0a04b", lw=1.5))
            axes[0, i].set_title(_("input {i}").format(i=i), fontsize=7)
            axes[1, i].imshow(weight[i].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            axes[1, i].set_title(_("kernel {i}: {s}").format(i=i, s=f"{float(k['products'][i].sum()):+.2f}"),
                                 fontsize=7)
            if kh * kw <= 25:
                for (rr, cc), w in np.ndenumerate(weight[i].numpy()):
                    axes[1, i].text(cc, rr, f"{window[i, rr, cc]:.1f}\n\u00d7{w:.2f}", ha="center", va="center",
                                    fontsize=4)
        out = self.activations[layer][channel].numpy()
        axes[2, 0].imshow(out, cmap="viridis", interpolation="nearest")
        r, c = k["position"]
        axes[2, 0].add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#f0a04b", lw=1.5))
        axes[2, 0].set_title(_("output {ch}").format(ch=channel), fontsize=7)
        more = "" if x.shape[0] <= n_in else _(" ({n} input channels, first {k} shown)").format(n=x.shape[0], k=n_in)
        axes[2, 1].text(0, 0.5, _("at ({r}, {c}): sum of window \u00d7 kernel {s} + bias {b} = {v}{more}").format(
            r=r, c=c, s=f"{k['sum']:.3f}", b=f"{k['bias']:.3f}", v=f"{k['value']:.3f}", more=more),
            fontsize=9, va="center", transform=axes[2, 1].transAxes)
        fig.suptitle(_("{layer}, output channel {ch}: kernel and arithmetic").format(layer=layer, ch=channel),
                     fontsize=10)
        fig.subplots_adjust(left=0.03, right=0.97, top=0.88, bottom=0.03, hspace=0.35)  # the sum's text runs wide
        return fig


def _show_input(ax: Any, x: torch.Tensor) -> None:
    img = x.detach().float().cpu().numpy()
    if img.shape[0] == 3:
        lo, hi = img.min(), img.max()
        ax.imshow(((img - lo) / (hi - lo + 1e-12)).transpose(1, 2, 0), interpolation="nearest")
    else:
        ax.imshow(img[0], cmap="gray", interpolation="nearest")
    ax.set_axis_off()


def safe_name(name: str) -> str:
    """A layer name as a file-name part: ``features.0`` -> ``features_0``."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "layer"


def _same_padding(module: nn.Conv2d) -> tuple[int, int]:
    if module.padding == "valid":
        return (0, 0)
    return tuple((d * (k - 1)) // 2 for k, d in zip(module.kernel_size, module.dilation))  # type: ignore[return-value]


# --- computing an explanation -------------------------------------------------------------------

def as_input(image: Any) -> torch.Tensor:
    """A preprocessed image -> float (C, H, W): tensors/arrays, (H, W) gets a channel, integers are 0..255."""
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ConfigError(_("explain takes one image (C, H, W) or (H, W), got shape {shape}").format(
            shape=tuple(x.shape)))
    if not x.is_floating_point():
        x = x.float() / 255.0
    return x.float()


def record_layers(model: nn.Module, x: torch.Tensor, *, keep_inputs: bool = True,
                  hooked: Mapping[str, nn.Module] | None = None) -> tuple[torch.Tensor, "OrderedDict[str, torch.Tensor]", dict[str, torch.Tensor]]:
    """Run ``model`` on the batch ``x`` (no gradients), recording each conv/pool/activation/linear output.

    Returns (logits, outputs by layer name in call order, conv inputs by layer name); the outputs
    keep their batch dimension. ``hooked`` restricts recording to these named modules.
    """
    outputs: OrderedDict[str, torch.Tensor] = OrderedDict()
    inputs: dict[str, torch.Tensor] = {}
    chosen = hooked if hooked is not None else {n: m for n, m in model.named_modules() if layer_kind(m)}

    def hook(name: str, conv: bool) -> Callable:
        def record(_module: nn.Module, args: tuple, out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                return
            key, k = name, 1
            while key in outputs:  # a module called more than once: name, name:2, name:3
                k += 1
                key = f"{name}:{k}"
            outputs[key] = out.detach().clone()  # an in-place activation next must not change it
            if conv and keep_inputs and args and isinstance(args[0], torch.Tensor):
                inputs[key] = args[0].detach().clone()
        return record

    handles = [m.register_forward_hook(hook(n or type(m).__name__.lower(), isinstance(m, nn.Conv2d)))
               for n, m in chosen.items()]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ConfigError(_("explain needs a model that returns class scores (N, classes); got {what}").format(
            what=type(logits).__name__ if not isinstance(logits, torch.Tensor) else tuple(logits.shape)))
    return logits, outputs, inputs


def attribute(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor, *, method: str = METHODS[0],
              steps: int = DEFAULT_STEPS, layer: nn.Module | None = None) -> torch.Tensor:
    """Attribution of ``target`` to the input pixels of the batch ``x``: (N, H, W), channels summed.

    ``integrated_gradients``: from an all-zero input, ``steps`` path samples in one batch (signed);
    ``saliency``: the absolute gradient (one backward pass); ``gradcam``: Grad-CAM of ``layer``
    (default the last Conv2d), upsampled to the input size.
    """
    try:
        from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
    except ImportError:
        raise MissingExtraError(_("attributions need captum: pip install captum")) from None
    if method not in METHODS:
        raise ConfigError(_("unknown attribution method {method!r}; choose one of: {choices}").format(
            method=method, choices=", ".join(METHODS)))
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        if method == "integrated_gradients":
            a = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps,
                                                     internal_batch_size=steps * len(x))
            return a.detach().sum(1)
        if method == "saliency":
            return Saliency(model).attribute(x, target=target, abs=True).detach().sum(1)
        if layer is None:
            convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise ConfigError(_("gradcam needs a model with a Conv2d layer"))
            layer = convs[-1]
        cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear").detach().sum(1)


def explain(
    model_or_predictor: Any,
    image: Any,
    *,
    target: int | str | None = None,
    classes: Sequence[str] | None = None,
    method: str = METHODS[0],
    steps: int = DEFAULT_STEPS,
) -> Explanation:
    """Explain one image: every layer's output, the prediction and an attribution map.

    ``model_or_predictor``: any ``nn.Module`` returning class scores, or a Predictor (anything with
    ``.model``, ``.classes`` and ``.to_input``), which also preprocesses ``image`` (a path, bytes, a
    PIL image or pixels) as the training data was. For a bare module ``image`` is the input the
    model takes: a (C, H, W) or (H, W) tensor or array (integers read as 0..255).
    ``target``: the class (index or name) to attribute; by default the predicted one.
    """
    if hasattr(model_or_predictor, "to_input") and isinstance(getattr(model_or_predictor, "model", None), nn.Module):
        predictor = model_or_predictor
        model, x = predictor.model, predictor.to_input(image)
        classes = classes or list(predictor.classes)
    elif isinstance(model_or_predictor, nn.Module):
        model, x = model_or_predictor, as_input(image)
    else:
        raise ConfigError(_("explain takes an nn.Module or a Predictor, got {what}").format(
            what=type(model_or_predictor).__name__))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        named = {n or type(m).__name__.lower(): m for n, m in model.named_modules() if layer_kind(m)}
        logits, outputs, inputs = record_layers(model, x.unsqueeze(0).to(device))
        logits = logits[0].detach().float().cpu()
        classes = [str(c) for c in (classes or range(len(logits)))]
        if len(classes) != len(logits):
            raise ConfigError(_("{n} class names given for a model with {k} outputs").format(
                n=len(classes), k=len(logits)))
        t = _resolve_target(target, classes, int(logits.argmax()))
        attribution = attribute(model, x.unsqueeze(0).to(device), t, method=method, steps=steps)[0].cpu()
    finally:
        model.train(was_training)
    return Explanation(
        model=model, input=x.detach().cpu(),
        activations=OrderedDict((n, t_[0].cpu()) for n, t_ in outputs.items()),
        kinds={n: layer_kind(named[n.split(":")[0]]) or "" for n in outputs},
        layer_inputs={n: t_[0].cpu() for n, t_ in inputs.items()},
        modules={n: named[n] for n in named},
        logits=logits, classes=classes, target=t, attribution=attribution, method=method,
    )


def _resolve_target(target: int | str | None, classes: Sequence[str], predicted: int) -> int:
    if target is None:
        return predicted
    if isinstance(target, str) and target in classes:
        return list(classes).index(target)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= int(target) < len(classes):
        return int(target)
    raise ConfigError(_("target must be a class name or an index from 0 to {last}, got {target!r}").format(
        last=len(classes) - 1, target=target))


def conv_activations(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(layer name, output) of every Conv2d for a batch of one image, in forward order, then ("__logits__", logits)."""
    model.eval()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    logits, outputs, _inputs = record_layers(model, x, keep_inputs=False, hooked=convs)
    return [(n, t[0]) for n, t in outputs.items()] + [("__logits__", logits[0])]


def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The input of the model's last Linear layer for each image of ``x`` (N, features): its embedding."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(_("this model has no Linear layer whose input could serve as its embedding"))
    last = linears[-1]
    found: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, args, _out: found.append(args[0].detach().flatten(1).cpu()))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                model(x[s : s + batch_size].to(device))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(found) if found else torch.empty(0, last.in_features)


__all__: Sequence[str] = [
    "Explanation", "Predicted", "METHODS", "attribute", "conv_activations", "explain", "layer_kind",
    "overlay_attribution", "penultimate_features", "record_layers",
]
