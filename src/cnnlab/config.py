"""Typed configuration.

Each component owns its defaults here, and the defaults *are* the lesson's
recipe: LeNet-5 on MNIST, a 50k/10k split seeded with 1234, Adam at 1e-3,
summed cross-entropy, batch 32, 5 epochs. The resolved config is saved as
``config.json`` in every run directory, so a run can always be explained and
re-created.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from cnnlab.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "mnist"
    data_dir: str | None = None  # None: --data-dir, then $CNNLAB_DATA_DIR, then the cache default
    val_size: int = 10_000
    split_seed: int = 1234  # the lesson's random_split seed
    download: bool = True
    subset: int | None = None  # keep only the first N training images (quick experiments, smoke tests)


@dataclass
class ModelConfig:
    name: str = "lenet5"


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    eval_batch_size: int = 1000  # evaluation batch size changes speed only, never the metrics
    seed: int = 0  # model init and shuffling; the split has its own seed
    loss_reduction: str = "sum"  # the lesson's CrossEntropyLoss(reduction="sum")
    train_eval: bool = True  # evaluate on the whole training set after every epoch, as the lesson does
    device: str = "auto"
    # NHWC activations make oneDNN's conv and pooling kernels ~1.5x faster on CPU; the
    # arithmetic is the same up to float rounding (accuracy effect measured in benchmarks/).
    channels_last: bool = True
    threads: int | None = None  # None: a sensible choice for the machine
    progress: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
        if not o.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
        if o.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        if t.loss_reduction not in ("sum", "mean"):
            raise ConfigError(f"train.loss_reduction must be 'sum' or 'mean', got {t.loss_reduction!r}")
        if t.threads is not None:
            _positive("train.threads", t.threads)
        if not (t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")


def _update(section_obj: Any, values: Mapping[str, Any], section: str) -> Any:
    known = {f.name: f for f in fields(section_obj)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {section}.{key}; expected one of {sorted(known)}")
    return dataclasses.replace(section_obj, **dict(values))
