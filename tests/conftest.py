"""Shared fixtures: small MNIST-format data written by the tests themselves (no downloads)."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images whose class is a bright bar at a class-specific place, plus noise.

    Easy enough that a few hundred steps of LeNet-5 learn it, hard enough that
    an untrained network does not already know it.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 4 + 2 * (k % 5), 4 + 10 * (k // 5)
        images[i, r : r + 3, c : c + 12] = 255
    return images, labels


def make_mnist_folder(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_digits(n_train, seed=0)
    write_idx_images(raw / "train-images-idx3-ubyte", x)
    write_idx_labels(raw / "train-labels-idx1-ubyte", y)
    x, y = synthetic_digits(n_test, seed=1)
    write_idx_images(raw / "t10k-images-idx3-ubyte", x)
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", y)
    return root


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding a 600/200-image MNIST lookalike in the real IDX format."""
    return make_mnist_folder(tmp_path_factory.mktemp("data"))


def tiny_run_config(data_dir: Path, **train: object):
    """The lesson's recipe on a tiny data folder: 100 validation images, 2 epochs, 1 thread, quiet.

    ``train`` overrides the [train] section (epochs, seed, train_eval, ...).
    """
    from cnnlab.core.config import Config

    cfg = Config().override("data", data_dir=str(data_dir), val_size=100, download=False)
    return cfg.override("train", **{"epochs": 2, "progress": False, "threads": 1, **train})


def train_tiny_run(data_dir: Path, run_dir: Path, **train: object) -> Path:
    """Train :func:`tiny_run_config` into ``run_dir`` and return it."""
    from cnnlab.service.training import train_config as train_run

    train_run(tiny_run_config(data_dir, **train), run_dir, log=lambda _msg: None)
    return run_dir


@pytest.fixture
def tiny_config(tiny_mnist: Path):
    return tiny_run_config(tiny_mnist)


@pytest.fixture(scope="session")
def tiny_trained_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory trained once per session (2 epochs on the tiny data): for predict/export tests."""
    return train_tiny_run(tiny_mnist, tmp_path_factory.mktemp("trained") / "run")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests must never pick up a developer's real data folder by accident.
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)


def real_mnist_dir() -> Path | None:
    env = os.environ.get("CNNLAB_TEST_REAL_DATA")
    path = Path(env) if env else REAL_DATA
    return path if (path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists() else None


requires_real_mnist = pytest.mark.skipif(
    real_mnist_dir() is None, reason="real MNIST not found (../shared/data or $CNNLAB_TEST_REAL_DATA)"
)
