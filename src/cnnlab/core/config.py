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
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from cnnlab.core.errors import ConfigError

# Evaluation batch size everywhere a batch size only changes speed (training's evaluation passes,
# `cnnlab evaluate/analyze/compare`). 256, not more: on a CPU, LeNet-5 evaluates about 3x faster
# in batches of 256 than of 1000 (benchmarks/README.md, "Memory allocator").
EVAL_BATCH_SIZE = 256


@dataclass
class DataConfig:
    dataset: str = "mnist"
    data_dir: str | None = None  # None: --data-dir, then $CNNLAB_DATA_DIR, then the cache default
    val_size: int = 10_000
    split_seed: int = 1234  # the lesson's random_split seed
    download: bool = True
    subset: int | None = None  # keep only the first N training images (quick experiments, smoke tests)
    image_size: int | None = None  # resize images to this side once, at load time (None: the dataset's own)


@dataclass
class ModelConfig:
    name: str = "lenet5"
    pretrained: bool = False  # torchvision's ImageNet weights (alexnet, vgg11, googlenet, resnet18)


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    # Learning-rate schedule, set every iteration from the iteration number (so resuming needs no state):
    # constant (the lesson's) | onecycle (warm up to lr, then cosine down) | cosine (lr -> min_lr) | step.
    schedule: str = "constant"
    warmup_pct: float = 0.3  # onecycle: fraction of all iterations spent warming up from lr/25
    min_lr: float = 0.0  # cosine: the final learning rate
    step_epochs: int = 10  # step: multiply lr by step_gamma every step_epochs epochs
    step_gamma: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    eval_batch_size: int = EVAL_BATCH_SIZE  # speed only, never the metrics
    seed: int = 0  # model init and shuffling; the split has its own seed
    loss_reduction: str = "sum"  # the lesson's CrossEntropyLoss(reduction="sum")
    label_smoothing: float = 0.0  # training loss only; validation/test loss stay plain cross-entropy
    patience: int | None = None  # early stopping: stop after this many epochs without a better val loss
    # Batched augmentation on the device: none (the lesson's) | auto (the dataset's preset) |
    # a preset name (shift, affine, crop, crop-flip), optionally with overrides: "affine:degrees=15,translate=0.1"
    augment: str = "none"
    train_eval: bool = True  # evaluate on the whole training set after every epoch, as the lesson does
    device: str = "auto"
    # NHWC activations make oneDNN's conv and pooling kernels ~1.5x faster on CPU; the
    # arithmetic is the same up to float rounding (accuracy effect measured in benchmarks/).
    channels_last: bool = True
    threads: int | None = None  # None: a sensible choice for the machine
    # Opt-in speed options that change the numerics (off in every recipe; for GPUs):
    # amp "bf16" runs forward passes under bfloat16 autocast (weights, optimizer and loss stay
    # float32); compile is torch.compile's mode: off | default | reduce-overhead (CUDA graphs) | max-autotune.
    amp: str = "off"
    compile: str = "off"
    progress: bool = True
    tensorboard: bool = False  # ignite TensorboardLogger events in RUN/tensorboard/ (the tensorboard extra)
    # Deterministic kernels everywhere (torch.use_deterministic_algorithms); CPU runs are
    # reproducible without it, CUDA runs need it for bit-exact resume.
    deterministic: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
                raise ConfigError(f"unknown config section {section!r}; expected one of {sorted(sections)}")
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section {section!r} must be a table of key = value")
            setattr(cfg, section, _update(getattr(cfg, section), values, section))
        cfg.validate()
        return cfg

    def override(self, section: str, **values: Any) -> "Config":
        """Return a copy with ``values`` set in ``section``; ``None`` values are ignored."""
        values = {k: v for k, v in values.items() if v is not None}
        new = dataclasses.replace(self, **{section: _update(getattr(self, section), values, section)})
        new.validate()
        return new

    def validate(self) -> None:
        t, d, o = self.train, self.data, self.optim
        _positive("train.epochs", t.epochs)
        _positive("train.batch_size", t.batch_size)
        _positive("train.eval_batch_size", t.eval_batch_size)
        _positive("data.val_size", d.val_size)
        if d.subset is not None:
            _positive("data.subset", d.subset)
        self._validate_optimizer()
        if t.loss_reduction not in ("sum", "mean"):
            raise ConfigError(f"train.loss_reduction must be 'sum' or 'mean', got {t.loss_reduction!r}")
        if t.threads is not None:
            _positive("train.threads", t.threads)
        if not (t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}")
        if t.amp not in AMP_MODES:
            raise ConfigError(f"train.amp must be one of {', '.join(AMP_MODES)}, got {t.amp!r}")
        if t.compile not in COMPILE_MODES:
            raise ConfigError(f"train.compile must be one of {', '.join(COMPILE_MODES)}, got {t.compile!r}")
        self._validate_recipe_options()

    def _validate_optimizer(self) -> None:
        # Checked here, before any data is read: torch would only refuse these after the
        # dataset loaded (with a traceback), and accept some (momentum 5) and then diverge.
        o = self.optim
        for key in ("lr", "weight_decay", "momentum", "warmup_pct", "min_lr", "step_gamma"):
            value = getattr(o, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"optim.{key} must be a finite number, got {value!r}")
        if not o.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
        if o.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        if not 0 <= o.momentum < 1:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {o.momentum}")
        if o.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {o.name!r}")
        if o.nesterov and o.momentum == 0:
            raise ConfigError("optim.nesterov needs optim.momentum > 0 (Nesterov momentum with no momentum)")

    def _validate_recipe_options(self) -> None:
        t, d, o = self.train, self.data, self.optim
        if o.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}")
        if not 0 < o.warmup_pct < 1:
            raise ConfigError(f"optim.warmup_pct must be between 0 and 1, got {o.warmup_pct}")
        if o.min_lr < 0 or o.min_lr > o.lr:
            raise ConfigError(f"optim.min_lr must be between 0 and optim.lr ({o.lr}), got {o.min_lr}")
        _positive("optim.step_epochs", o.step_epochs)
        if not 0 < o.step_gamma <= 1:
            raise ConfigError(f"optim.step_gamma must be in (0, 1], got {o.step_gamma}")
        if not isinstance(t.label_smoothing, (int, float)) or not 0 <= t.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
        if t.patience is not None:
            _positive("train.patience", t.patience)
        if d.image_size is not None:
            _positive("data.image_size", d.image_size)
        if not isinstance(t.augment, str) or not t.augment.strip():
            raise ConfigError(f"train.augment must be a preset name such as none, auto or crop-flip, got {t.augment!r}")


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine", "step")
AMP_MODES = ("off", "bf16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")


def _update(section_obj: Any, values: Mapping[str, Any], section: str) -> Any:
    known = {f.name: f for f in fields(section_obj)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {section}.{key}; expected one of {sorted(known)}")
    return dataclasses.replace(section_obj, **dict(values))


# --- recipes (TOML) ------------------------------------------------------------------------


def recipe_dir():  # -> pathlib.Path
    """The folder of named recipes shipped with the package."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "recipes"


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.toml"))


def load_recipe(name_or_path: str) -> Config:
    """A :class:`Config` from a named recipe (``tutorial``) or a TOML file.

    The file holds the same sections as ``config.json`` (``[data]``, ``[model]``,
    ``[optim]``, ``[train]``); anything left out keeps the lesson's default.
    Unknown sections or keys, and values of the wrong type, are errors.
    """
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
            raise ConfigError(f"unknown recipe {name_or_path!r}; named recipes: {', '.join(list_recipes())} "
                              "(or give the path of a .toml file)")
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return Config.from_dict(_check_types(raw))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _check_types(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check TOML values against the dataclass annotations (ints are accepted for floats)."""
    out: dict[str, Any] = {}
    defaults = Config()
    for section, values in raw.items():
        obj = getattr(defaults, section, None)
        if obj is None or not isinstance(values, Mapping):
            out[section] = values  # from_dict reports it
            continue
        annotations = {f.name: str(f.type) for f in fields(obj)}
        checked = {}
        for key, value in values.items():
            kinds = {k.strip() for k in annotations.get(key, "").split("|")}
            if not kinds or kinds == {""}:
                checked[key] = value  # unknown key: from_dict reports it
                continue
            ok = (
                ("bool" in kinds and isinstance(value, bool))
                or ("int" in kinds and isinstance(value, int) and not isinstance(value, bool))
                or ("str" in kinds and isinstance(value, str))
            )
            if "float" in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
                ok, value = True, float(value)
            if not ok:
                raise ConfigError(f"{section}.{key} must be of type {' or '.join(sorted(kinds))}, got {value!r}")
            checked[key] = value
        out[section] = checked
    return out
