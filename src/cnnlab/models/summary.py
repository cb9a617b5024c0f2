"""A per-layer summary of a model: output shapes, parameters, multiply-adds; the models table."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from cnnlab.core.catalog import format_models_table
from cnnlab.core.i18n import _, format_int, use_language
from cnnlab.models import (
    create_model,
    get_model_entry,
    list_models,
    supports_pretrained,
)
from cnnlab.models.shapes import ShapeError


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass
class ModelSummary:
    """A model's layers with output shapes, parameters and multiply-adds; ``print`` it for the table.

    The table speaks ``lang`` (None: the language in force when it is shown), numbers included
    (``61.706`` in Spanish).
    """

    model: str
    input_shape: tuple[int, int, int]
    rows: list[LayerRow]
    total_params: int
    total_macs: int
    lang: str | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model, "input_shape": list(self.input_shape),
            "layers": [{"name": r.name, "type": r.kind, "output_shape": list(r.output_shape), "params": r.params,
                        "macs": r.macs} for r in self.rows],
            "total_params": self.total_params, "total_macs": self.total_macs,
        }
    def __repr__(self) -> str:
        c, h, w = self.input_shape
        return (f"ModelSummary({self.model!r}, input={c}x{h}x{w}, layers={len(self.rows)}, "
                f"params={self.total_params:,}, MACs={self.total_macs:,})")

    def __str__(self) -> str:
        return self.to_text()

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        # IPython and Jupyter show the table (print() does too); repr() stays one line.
        printer.text(self.to_text() if not cycle else "ModelSummary(...)")  # type: ignore[attr-defined]

    def to_text(self, *, lang: str | None = None) -> str:
        """The table, in ``lang`` (else this summary's language, else the one in force)."""
        with use_language(lang or self.lang):
            return self._text()

    def _text(self) -> str:
        c, h, w = self.input_shape
        layer, kind, output, params, macs, total = (_("layer"), _("type"), _("output shape"), _("params"), _("MACs"),
                                                    _("total"))
        name_w = max([len(layer)] + [len(r.name) for r in self.rows])
        kind_w = max([len(kind)] + [len(r.kind) for r in self.rows])
        shape_w, params_w, macs_w = max(14, len(output)), max(11, len(params)), max(13, len(macs))
        head = f"{layer:<{name_w}}  {kind:<{kind_w}}  {output:>{shape_w}}  {params:>{params_w}}  {macs:>{macs_w}}"
        lines = [_("{model} on a {c}x{h}x{w} input").format(model=self.model, c=c, h=h, w=w), head, "-" * len(head)]
        for r in self.rows:
            shape = "x".join(str(d) for d in r.output_shape)
            lines.append(f"{r.name:<{name_w}}  {r.kind:<{kind_w}}  {shape:>{shape_w}}  {format_int(r.params):>{params_w}}"
                         f"  {format_int(r.macs):>{macs_w}}")
        lines.append("-" * len(head))
        lines.append(f"{total:<{name_w}}  {'':<{kind_w}}  {'':>{shape_w}}  {format_int(self.total_params):>{params_w}}"
                     f"  {format_int(self.total_macs):>{macs_w}}")
        lines.append(_("MACs: multiply-adds of one image through conv and linear layers (bias, activations, "
                       "pooling and normalisation not counted)."))
        return "\n".join(lines)


def layer_macs(module: "nn.Module", inputs: tuple, output: "torch.Tensor") -> int:
    """Multiply-adds of one call of a conv or linear layer, per image."""
    import torch.nn as nn

    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_out = (module.in_channels // module.groups) * kh * kw
        return int(output[0].numel()) * per_out
    if isinstance(module, nn.Linear):
        return int(output[0].numel()) * module.in_features
    return 0


def summarize(model: "nn.Module", input_shape: tuple[int, int, int], name: str = "model", *,
              lang: str | None = None) -> ModelSummary:
    """One forward pass of a single zero image with hooks on every leaf module; the table speaks ``lang``."""
    import torch

    rows: list[LayerRow] = []
    handles = []

    def hook(mod_name: str):
        def fn(module, inputs, output):
            if isinstance(output, torch.Tensor):
                params = sum(p.numel() for p in module.parameters(recurse=False))
                rows.append(LayerRow(mod_name, type(module).__name__, tuple(output.shape[1:]), params,
                                     layer_macs(module, inputs, output)))
        return fn

    for mod_name, module in model.named_modules():
        if mod_name and not any(True for _child in module.children()):
            handles.append(module.register_forward_hook(hook(mod_name)))
    was_training = model.training
    model.eval()
    first = next(iter(model.parameters()), None)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=first.device if first is not None else None))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total_params = sum(p.numel() for p in model.parameters())
    return ModelSummary(name, tuple(input_shape), rows, total_params, sum(r.macs for r in rows), lang=lang)


def summarize_model(name: str, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> ModelSummary:
    """Summary of a registered model built for ``input_shape``."""

    c, h, w = input_shape
    if h != w:
        raise ShapeError(_("cnnlab models take square images; got {h}x{w}").format(h=h, w=w))
    try:
        model = create_model(name, in_channels=c, num_classes=num_classes, image_size=h)
    except ValueError as exc:
        raise ShapeError(str(exc)) from None
    return summarize(model, input_shape, name)


def models_info(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> list[dict]:
    """Every registered model: name, parameters and MACs for one ``input_shape`` image (``None`` and an
    ``error`` where the model cannot take it), pretrained weights, description."""

    rows = []
    for name in list_models():
        row: dict = {"name": name, "params": None, "macs": None}
        try:
            s = summarize_model(name, input_shape, num_classes)
            row.update(params=s.total_params, macs=s.total_macs)
        except ShapeError as exc:
            row["error"] = str(exc)
        row.update(pretrained=supports_pretrained(name), description=get_model_entry(name).description)
        rows.append(row)
    return rows


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1x28x28"`` / ``"3,32,32"`` -> (C, H, W)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        c, h, w = (int(p) for p in parts)
    except ValueError:
        raise ShapeError(_("input shape must look like 1x28x28 (channels x height x width), got {text!r}").format(
            text=text)) from None
    if min(c, h, w) < 1:
        raise ShapeError(_("input shape must be positive, got {text!r}").format(text=text))
    return c, h, w


def models_table(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> str:
    """Every registered model with its parameters and MACs for one ``input_shape`` image."""

    rows = []
    for name in list_models():
        try:
            s = summarize_model(name, input_shape, num_classes)
            params, macs = format_int(s.total_params), format_int(s.total_macs)
        except ShapeError as exc:
            params, macs = "-", f"({exc})"[:40]
        rows.append((name, params, macs, _("yes") if supports_pretrained(name) else "",
                     _(get_model_entry(name).description)))
    return format_models_table(input_shape, num_classes, rows)
