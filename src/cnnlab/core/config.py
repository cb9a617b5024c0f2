"""Typed configuration.

Each component owns its defaults here, and the defaults *are* the lesson's
recipe: LeNet-5 on MNIST, a 50k/10k split seeded with 1234, Adam at 1e-3,
summed cross-entropy, batch 32, 5 epochs. The resolved config is saved as
``config.json`` in every run directory, so a run can always be explained and
re-created.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import _

# Evaluation batch size everywhere a batch size only changes speed (training's evaluation passes,
# `cnnlab evaluate/analyze/compare`). 256, not more: on a CPU, LeNet-5's activations then stay in
# cache (measured in benchmarks/README.md, "Memory allocator").
EVAL_BATCH_SIZE = 256


# Allowed values, the one list of each: validation below and the command line's choices use them.
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine", "step")
LOSS_REDUCTIONS = ("sum", "mean")
AMP_MODES = ("off", "bf16", "auto")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
#: Device names: auto picks CUDA, then Apple's MPS, then the CPU (as Lightning's accelerator="auto").
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."
#: The prefix of a model name (``custom:ClassName``) or dataset name (``custom:tensors``) given from
#: Python as the user's own nn.Module or data: no registry can rebuild it from the name.
CUSTOM_PREFIX = "custom:"


def is_custom(name: str) -> bool:
    """Whether a model or dataset name stands for the user's own module or data (see :data:`CUSTOM_PREFIX`)."""
    return str(name).startswith(CUSTOM_PREFIX)


#: `cnnlab export` formats: ONNX (dynamo exporter), torch.export's ExportedProgram (.pt2), and
#: TorchScript (torch.jit.trace; deprecated by PyTorch, for LibTorch users).
EXPORT_FORMATS = ("onnx", "pt2", "torchscript")


def option(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None,
           default_text: str | None = None, path: bool = False, resumable: bool = False) -> Any:
    """A config field that is also a ``cnnlab train`` option: its help, flag name and allowed values.

    ``cnnlab train``'s options are generated from these fields (``apps/cli.py``), so a default or an
    allowed value is written once, here. ``resumable``: the field changes how a run computes, not
    what (epochs, device, threads, ...), so it may differ when a run is resumed.
    """
    meta = {"help": help, "flag": flag, "choices": choices, "default_text": default_text, "path": path}
    return field(default=default, metadata={"cli": meta, "resumable": resumable})


MAX_SEED = 2**32 - 1  # largest seed taken (NumPy's limit)

@dataclass
class DataConfig:
    dataset: str = option("mnist", "Dataset.", flag="--dataset")
    # None: --data-dir, then $CNNLAB_DATA_DIR, then the cache default; a run stores the absolute folder.
    data_dir: str | None = option(None, "Dataset folder.", path=True, resumable=True,
                                  default_text="$CNNLAB_DATA_DIR, else ~/.cache/cnnlab/data")
    val_size: int = option(10_000, "Validation images held out of the training set.")
    split_seed: int = option(1234, "Seed of the train/validation split (the lesson's random_split seed).")
    download: bool = option(True, "Download the dataset when its files are missing.", resumable=True)
    subset: int | None = option(None, "Train on only the first N training images (quick tries).")
    image_size: int | None = option(None, "Resize images to this side once, at load time.",
                                    default_text="the dataset's own")


@dataclass
class ModelConfig:
    name: str = option("lenet5", "Model name (see `cnnlab models`).", flag="--model")
    pretrained: bool = option(False, "Start from torchvision's ImageNet weights (alexnet, vgg11, googlenet, resnet18).")
    tta_shift: int = option(0, "Test-time augmentation: the trained model answers with its softmax averaged over "
                            "the image and its four shifts by this many pixels (0: off; training is unchanged).")


@dataclass
class OptimConfig:
    name: str = option("adam", "Optimizer.", flag="--optimizer", choices=OPTIMIZERS)
    lr: float = option(1e-3, "Learning rate.")
    weight_decay: float = option(0.0, "Weight decay.")
    # tuomaso/train_mnist_fast's one-epoch recipe uses (0.7, 0.9): shorter averages follow a one-cycle
    # schedule's fast-moving rate better (measured for `fast` in benchmarks/README.md, round 3).
    beta1: float = option(0.9, "Adam/AdamW: decay of the gradient's running average.")
    beta2: float = option(0.999, "Adam/AdamW: decay of the squared gradient's running average.")
    momentum: float = option(0.9, "SGD momentum.")
    nesterov: bool = option(False, "SGD with Nesterov momentum.")
    # Set every iteration from the iteration number (so resuming needs no state).
    schedule: str = option("constant", "Learning-rate schedule: constant (the lesson's), onecycle (warm up to "
                           "--lr, then cosine down), cosine (--lr to --min-lr) or step.", choices=SCHEDULES)
    warmup_pct: float = option(0.3, "onecycle schedule: fraction of all iterations spent warming up from lr/25.")
    min_lr: float = option(0.0, "cosine schedule: the final learning rate.")
    step_epochs: int = option(10, "step schedule: epochs between lr drops.")
    step_gamma: float = option(0.1, "step schedule: lr factor at each drop.")


@dataclass
class TrainConfig:
    epochs: int = option(5, "Training epochs.", resumable=True)
    batch_size: int = option(32, "Training batch size (per process with --nproc).")
    eval_batch_size: int = option(EVAL_BATCH_SIZE, "Evaluation batch size (speed only, never the metrics).",
                                  resumable=True)
    seed: int = option(0, "Seed for model init and shuffling (the split has its own seed).")
    loss_reduction: str = option("sum", "Training loss per batch: summed (the lesson's) or mean.",
                                 choices=LOSS_REDUCTIONS)
    label_smoothing: float = option(0.0, "Label smoothing of the training loss (validation/test loss stay plain).")
    patience: int | None = option(None, "Early stopping: epochs without a better validation loss.",
                                  default_text="no early stopping")
    augment: str = option("none", "Batched augmentation on the device: none, auto (the dataset's preset), shift, "
                          "affine, crop, crop-flip, with overrides as NAME:key=value,...")
    train_eval: bool = option(True, "Evaluate on the whole training set after every epoch, as the lesson does.")
    device: str = option("auto", DEVICE_HELP, resumable=True)
    # NHWC activations make oneDNN's conv and pooling kernels faster on CPU (benchmarks/); the
    # arithmetic is the same up to float rounding (accuracy effect measured in benchmarks/).
    channels_last: bool = option(True, "NHWC activations (faster on CPU; NCHW differs in float rounding only).")
    threads: int | None = option(None, "CPU threads.", resumable=True,
                                 default_text="1 on machines with <= 2 cores, else all cores up to 8")
    # Python threads, not OpenMP ones: a thread whose core is taken waits its turn instead of
    # spinning, so this uses idle cores without the thrashing that keeps --threads at 1.
    batch_split: int | None = option(
        None, "CPU: split every training batch into this many parts, computed at once by as many threads "
        "(the parts' gradients are summed: the result differs from one piece only in float32 summation "
        "order). 1: one piece.", resumable=True,
        default_text="as many parts as the cores beside --threads allow, of at least 64 images, for "
                     "cnnlab models made only of per-image layers (LeNet-5); else 1")
    # Opt-in speed options that change the numerics: weights, optimizer and loss stay float32 under
    # amp, and evaluation of the saved checkpoints (test score, predict, serve) stays float32.
    amp: str = option("off", "bf16: forward passes under bfloat16 autocast (changes numerics); auto: bf16 only "
                      "where the device has the instructions for it (AMX or AVX512-BF16 on a CPU), else off. "
                      "The run's config records what auto chose.", choices=AMP_MODES)
    compile: str = option("off", "torch.compile the model (reduce-overhead: CUDA graphs; changes numerics "
                          "slightly, the first epoch pays the compile time).", choices=COMPILE_MODES)
    progress: bool = option(True, "Progress bar.", default_text="on when stdout and stderr are terminals",
                             resumable=True)
    tensorboard: bool = option(False, 'Write TensorBoard events to RUN/tensorboard/ (needs: pip install '
                               '"cnnlab[tensorboard]").', resumable=True)
    # CPU runs are reproducible without it.
    deterministic: bool = option(False, "Deterministic kernels everywhere (needed for bit-exact CUDA resume).")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        """The config as a TOML file that :func:`load_recipe` (``--config``) reads back to an equal config.

        Fields that are ``None`` are left out (TOML has no null; left out, they keep their default,
        which is ``None``). Written by hand rather than with a TOML writer package: four flat tables of
        strings, numbers and booleans, where JSON's string and number syntax is valid TOML.
        """
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                if value is not None:
                    lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)

    def differences(self, other: "Config", ignore: tuple[str, ...] = ()) -> list[str]:
        """Dotted keys whose values differ (``ignore`` lists dotted keys to skip)."""
        a, b = self.to_dict(), other.to_dict()
        return [
            f"{section}.{key}"
            for section in a
            for key in a[section]
            if f"{section}.{key}" not in ignore and a[section][key] != b[section].get(key)
        ]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Config":
        """Build a config from nested dicts; unknown sections or keys are errors."""
        cfg = cls()
        sections = {f.name for f in fields(cls)}
        for section, values in raw.items():
            if section not in sections:
                raise ConfigError(_("unknown config section {section!r}; expected one of {sections}").format(
                    section=section, sections=sorted(sections)))
            if not isinstance(values, Mapping):
                raise ConfigError(_("config section {section!r} must be a table of key = value").format(section=section))
        return cfg.apply({section: dict(values) for section, values in raw.items()})

    def apply(self, changes: Mapping[str, Any]) -> "Config":
        """A validated copy with ``changes`` applied; this config is left as it is.

        ``changes`` maps dotted keys to values (``{"train.lr": 0.01}``) or sections to tables of
        values (``{"train": {"lr": 0.01}}``); both may be mixed. ``None`` means "not given": the
        field keeps its value (so an option left out on the command line, or a keyword left at
        ``None`` in Python, changes nothing). Values are checked against the field's type (an
        int is accepted for a float); unknown keys are errors.
        """
        flat = flatten_changes(changes)
        new = self
        for section in {dotted.split(".")[0] for dotted in flat}:
            values = {k.split(".", 1)[1]: v for k, v in flat.items() if k.split(".", 1)[0] == section}
            new = dataclasses.replace(new, **{section: dataclasses.replace(getattr(new, section), **values)})
        new.validate()
        return new

    def override(self, section: str, **values: Any) -> "Config":
        """``apply({section: values})``: the same meaning of ``None`` (not given, keep)."""
        return self.apply({section: values})

    def changed(self, changes: Mapping[str, Any]) -> list[str]:
        """Dotted keys that ``changes`` would set to a value other than this config's."""
        return [dotted for dotted, value in flatten_changes(changes).items() if self.get(dotted) != value]

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), key)

    def validate(self) -> None:
        t, d = self.train, self.data
        check_positive(**{"train.epochs": t.epochs, "train.batch_size": t.batch_size,
                          "train.eval_batch_size": t.eval_batch_size, "data.val_size": d.val_size})
        if d.subset is not None:
            check_positive(**{"data.subset": d.subset})
        self._validate_optimizer()
        if not 0 <= self.model.tta_shift <= 4:
            raise ConfigError(_("{key} must be between 0 and 4 pixels, got {value}").format(
                key="model.tta_shift", value=self.model.tta_shift))
        if t.loss_reduction not in LOSS_REDUCTIONS:
            raise ConfigError(_("{key} must be 'sum' or 'mean', got {value!r}").format(
                key="train.loss_reduction", value=t.loss_reduction))
        for key, seed in (("train.seed", t.seed), ("data.split_seed", d.split_seed)):
            # NumPy's range; seeds are also combined with epoch numbers into 64-bit generator seeds.
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
                raise ConfigError(_("{key} must be a whole number from 0 to {top}, got {value!r}").format(
                    key=key, top=MAX_SEED, value=seed))
        if t.threads is not None:
            check_positive(**{"train.threads": t.threads})
        if t.batch_split is not None:
            check_positive(**{"train.batch_split": t.batch_split})
        check_device(t.device, "train.device")
        if t.amp not in AMP_MODES:
            raise ConfigError(_("{key} must be one of {choices}, got {value!r}").format(
                key="train.amp", choices=", ".join(AMP_MODES), value=t.amp))
        if t.compile not in COMPILE_MODES:
            raise ConfigError(_("{key} must be one of {choices}, got {value!r}").format(
                key="train.compile", choices=", ".join(COMPILE_MODES), value=t.compile))
        self._validate_recipe_options()

    def _validate_optimizer(self) -> None:
        # Checked here, before any data is read: torch would only refuse these after the
        # dataset loaded (with a traceback), and accept some (momentum 5) and then diverge.
        o = self.optim
        for key in ("lr", "weight_decay", "momentum", "warmup_pct", "min_lr", "step_gamma"):
            value = getattr(o, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(_("{key} must be a finite number, got {value!r}").format(key=f"optim.{key}", value=value))
        if not o.lr > 0:
            raise ConfigError(_("{key} must be > 0, got {value}").format(key="optim.lr", value=o.lr))
        if o.weight_decay < 0:
            raise ConfigError(_("{key} must be >= 0, got {value}").format(key="optim.weight_decay", value=o.weight_decay))
        if not 0 <= o.momentum < 1:
            raise ConfigError(_("{key} must be in [0, 1), got {value}").format(key="optim.momentum", value=o.momentum))
        if o.name not in OPTIMIZERS:
            raise ConfigError(_("{key} must be one of {choices}, got {value!r}").format(
                key="optim.name", choices=", ".join(OPTIMIZERS), value=o.name))
        if o.nesterov and o.momentum == 0:
            raise ConfigError(_("optim.nesterov needs optim.momentum > 0 (Nesterov momentum with no momentum)"))

    def _validate_recipe_options(self) -> None:
        t, d, o = self.train, self.data, self.optim
        if o.schedule not in SCHEDULES:
            raise ConfigError(_("{key} must be one of {choices}, got {value!r}").format(
                key="optim.schedule", choices=", ".join(SCHEDULES), value=o.schedule))
        if not 0 < o.warmup_pct < 1:
            raise ConfigError(_("{key} must be between 0 and 1, got {value}").format(key="optim.warmup_pct", value=o.warmup_pct))
        if o.min_lr < 0 or o.min_lr > o.lr:
            raise ConfigError(_("optim.min_lr must be between 0 and optim.lr ({lr}), got {value}").format(lr=o.lr, value=o.min_lr))
        check_positive(**{"optim.step_epochs": o.step_epochs})
        if not 0 < o.step_gamma <= 1:
            raise ConfigError(_("{key} must be in (0, 1], got {value}").format(key="optim.step_gamma", value=o.step_gamma))
        if not isinstance(t.label_smoothing, (int, float)) or not 0 <= t.label_smoothing < 1:
            raise ConfigError(_("{key} must be in [0, 1), got {value}").format(key="train.label_smoothing",
                                                                              value=t.label_smoothing))
        if t.patience is not None:
            check_positive(**{"train.patience": t.patience})
        if d.image_size is not None:
            check_positive(**{"data.image_size": d.image_size})
        if not isinstance(t.augment, str) or not t.augment.strip():
            raise ConfigError(_("train.augment must be a preset name such as none, auto or crop-flip, got {value!r}").format(
                value=t.augment))


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 0.001, 1e-05: TOML floats (non-finite values never pass validate())
    return json.dumps(value, ensure_ascii=False)  # ints, and strings as TOML basic strings


def check_device(name: object, what: str = "device") -> str:
    """``name`` if it is a device cnnlab knows (availability is checked when it is used), else a ConfigError."""
    if isinstance(name, str) and (name in ("auto", "cpu", "cuda", "mps")
                                  or (name.startswith("cuda:") and name[5:].isdigit())):
        return name
    raise ConfigError(_("{key} must be one of {choices}, got {value!r}").format(key=what, choices=", ".join(DEVICES),
                                                                             value=name))



def check_positive(**values: int) -> None:
    """Each of ``values`` a whole number >= 1 (a NumPy integer counts), else a ConfigError naming it."""
    for name, value in values.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ConfigError(_("{key} must be a whole number >= 1, got {value!r}").format(key=name, value=value))


def config_fields() -> list[tuple[str, dataclasses.Field]]:
    """(section, field) of every config value, in config order."""
    defaults = Config()
    return [(section.name, f) for section in fields(Config) for f in fields(getattr(defaults, section.name))]


def resumable_keys() -> tuple[str, ...]:
    """Dotted keys that may change when a run is resumed (the fields declared ``resumable``)."""
    return tuple(f"{section}.{f.name}" for section, f in config_fields() if f.metadata.get("resumable"))


def field_kinds(f: dataclasses.Field) -> frozenset[str]:
    """The types a field's annotation allows, read once: ``{"int", "None"}`` for ``int | None``."""
    return frozenset(k.strip() for k in str(f.type).split("|"))


def flatten_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` from dotted keys and/or section tables; ``None`` values left out.

    Unknown sections and keys, and values of the wrong type, are :class:`ConfigError`; an int
    given for a float field becomes a float.
    """
    known = {f"{section}.{f.name}": f for section, f in config_fields()}
    sections = {section for section, _field in config_fields()}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        if key in sections:
            if not isinstance(value, Mapping):
                raise ConfigError(_("config section {section!r} must be a table of key = value").format(section=key))
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif "." in key and key.split(".", 1)[0] in sections:
            flat[key] = value
        else:
            raise ConfigError(_("unknown config section {section!r}; expected one of {sections}").format(
                section=key.split(".")[0], sections=sorted(sections)))
    out = {}
    for dotted, value in flat.items():
        if dotted not in known:
            section = dotted.split(".")[0]
            keys = sorted(k.split(".", 1)[1] for k in known if k.startswith(section + "."))
            raise ConfigError(_("unknown config key {key}; expected one of {keys}").format(key=dotted, keys=keys))
        if value is not None:
            out[dotted] = _checked(dotted, field_kinds(known[dotted]), value)
    return out


def _checked(dotted: str, kinds: frozenset[str], value: Any) -> Any:
    """``value`` if its type is one the field allows (ints are accepted, as floats, for floats)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if "float" in kinds and number:
        return float(value)
    if (("bool" in kinds and isinstance(value, bool)) or ("str" in kinds and isinstance(value, str))
            or ("int" in kinds and isinstance(value, int) and not isinstance(value, bool))):
        return value
    allowed = " or ".join(sorted(kinds - {"None"}))
    raise ConfigError(_("{key} must be of type {allowed}, got {value!r}").format(key=dotted, allowed=allowed, value=value))


# --- recipes (TOML) ------------------------------------------------------------------------


def recipe_dir():  # -> pathlib.Path
    """The folder of named recipes shipped with the package."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "recipes"


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.toml"))


def load_recipe(name_or_path: str) -> Config:
    """A :class:`Config` from a named recipe (``tutorial``), a TOML file, or a run's ``config.json``.

    A TOML file holds the same sections as ``config.json`` (``[data]``, ``[model]``, ``[optim]``,
    ``[train]``); anything left out keeps the lesson's default. A ``.json`` file is a run's own
    ``config.json`` (its ``"config"`` table) or the same sections as JSON. Unknown sections or
    keys, and values of the wrong type, are errors.
    """
    import json
    import sys
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib

    path = Path(name_or_path).expanduser()
    if not path.suffix and not path.exists():
        path = recipe_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(_("unknown recipe {name!r}; named recipes: {names} (or give the path of a .toml file)").format(
                name=name_or_path, names=", ".join(list_recipes())))
    if not path.is_file():
        raise ConfigError(_("recipe file {path} does not exist").format(path=path))
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
            if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
                raw = raw["config"]  # a run's config.json: {"config": {...}, "provenance": {...}}
        else:
            raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(_("{path} is not valid TOML: {reason}").format(path=path, reason=exc)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(_("{path} is not valid JSON: {reason}").format(path=path, reason=exc)) from None
    if not isinstance(raw, dict):
        raise ConfigError(_("{path} holds no config table").format(path=path))
    try:
        return Config.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
