"""One way to set a config: Config.apply (the CLI, resume and the notebook API all use it)."""
from __future__ import annotations

import pytest

from cnnlab.core.config import Config, resumable_keys
from cnnlab.core.errors import ConfigError


def test_dotted_keys_and_sections_mean_the_same() -> None:
    a = Config().apply({"optim.lr": 0.01, "train.epochs": 3})
    b = Config().apply({"optim": {"lr": 0.01}, "train": {"epochs": 3}})
    assert a == b and (a.optim.lr, a.train.epochs) == (0.01, 3)
    assert Config().train.epochs == 5  # a copy: the original is untouched


def test_none_means_not_given_and_keeps_the_value() -> None:
    base = Config().apply({"data.subset": 100, "train.patience": 2})
    kept = base.apply({"data.subset": None, "train": {"patience": None, "epochs": None}})
    assert kept == base
    assert base.override("data", subset=None) == base  # override is apply({section: ...})


@pytest.mark.parametrize("changes, message", [
    ({"train.epochs": 2.5}, "train.epochs must be of type int"),
    ({"train.progress": 1}, "train.progress must be of type bool"),
    ({"optim.lr": "fast"}, "optim.lr must be of type float"),
    ({"optim.learning_rate": 0.1}, "unknown config key optim.learning_rate"),
    ({"trainer": {"epochs": 1}}, "unknown config section 'trainer'"),
    ({"train.epochs": 0}, "train.epochs must be a whole number >= 1"),
])
def test_wrong_keys_and_types_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config().apply(changes)


def test_an_int_is_a_float_where_a_float_is_asked_for() -> None:
    cfg = Config().apply({"optim.lr": 1})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_which_fields_may_change_on_resume_is_field_metadata() -> None:
    keys = resumable_keys()
    assert {"train.epochs", "train.device", "train.threads", "data.data_dir"} <= set(keys)
    assert not {"optim.lr", "train.seed", "train.batch_size", "data.split_seed"} & set(keys)
    cfg = Config()
    assert cfg.changed({"optim.lr": cfg.optim.lr, "train.seed": 7, "train.epochs": None}) == ["train.seed"]
