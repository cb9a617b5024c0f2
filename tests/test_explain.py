"""cnnlab.explain: layer outputs by the model's own names, attributions that pass the sanity checks.

The sanity checks follow Adebayo et al. (2018), "Sanity Checks for Saliency Maps": on correctly
classified digits the attribution sits on or near the ink, and re-initialising the weights changes
the maps (their rank correlation with the trained model's maps collapses). They train LeNet-5 for a
few hundred steps: on real MNIST when ../shared/data has it (marked real_data), else on the
synthetic digits of conftest.py, whose "ink" is the class's bright bar.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.ndimage import binary_dilation
from scipy.stats import spearmanr

from cnnlab.analysis.explain import Explanation, attribute, explain, penultimate_features
from cnnlab.analysis.figures import InlineFigure
from cnnlab.core.errors import ConfigError
from cnnlab.data.mnist import load_mnist
from cnnlab.data.tensors import to_float
from cnnlab.models import create_model
from conftest import real_mnist_dir, requires_real_mnist, synthetic_digits


def quick_lenet(images: torch.Tensor, labels: torch.Tensor, steps: int = 300) -> nn.Module:
    """LeNet-5 after ``steps`` Adam steps of 64 images: ~97% on MNIST, in a few seconds on one thread."""
    torch.manual_seed(0)
    model = create_model("lenet5")
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(images), (64,), generator=g)
        loss = F.cross_entropy(model(to_float(images[idx])), labels[idx].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def correct_digits(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, n: int = 100):
    x, y = to_float(images[:400]), labels[:400].long()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    assert ok.float().mean() > 0.9  # the model learnt the task: the checks below are about a working model
    return x[ok][:n], y[ok][:n]


@pytest.fixture(scope="module")
def real_mnist():
    root = real_mnist_dir()
    train, test = load_mnist(root, train=True, download=False), load_mnist(root, train=False, download=False)
    model = quick_lenet(train.images, train.labels)
    return (model, *correct_digits(model, test.images, test.labels))


@pytest.fixture(scope="module")
def synthetic():
    x, y = synthetic_digits(3000, seed=0)
    model = quick_lenet(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y))
    xt, yt = synthetic_digits(400, seed=1)
    return (model, *correct_digits(model, torch.from_numpy(xt).unsqueeze(1), torch.from_numpy(yt)))


def ink_mass(a: np.ndarray, ink: np.ndarray, near: int = 2) -> tuple[float, float]:
    """Median share of |attribution| within ``near`` pixels of the ink, and the median share of the image that is."""
    zone = np.stack([binary_dilation(i, iterations=near) for i in ink])
    a = np.abs(a)
    return float(np.median((a * zone).sum((1, 2)) / a.sum((1, 2)))), float(np.median(zone.mean((1, 2))))


def randomized_rank_correlation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str,
                                where: np.ndarray | None = None, signed: bool = False) -> float:
    """Median Spearman correlation between the trained model's maps and those of a re-initialised copy."""
    torch.manual_seed(1)
    fresh = create_model("lenet5").eval()  # every layer re-initialised (the "cascading" check, all the way down)
    a, b = attribute(model, x, y, method=method).numpy(), attribute(fresh, x, y, method=method).numpy()
    if not signed:
        a, b = np.abs(a), np.abs(b)
    rhos = []
    for i in range(len(a)):
        m = where[i] if where is not None else np.ones(a[i].shape, bool)
        rhos.append(spearmanr(a[i][m], b[i][m])[0])
    return float(np.nanmedian(rhos))


# --- sanity checks -----------------------------------------------------------------------------

@pytest.mark.real_data
@requires_real_mnist
def test_attribution_mass_falls_on_the_ink_of_real_digits(real_mnist):
    model, x, y = real_mnist
    ink = x[:, 0].numpy() > 0.1
    share, area = ink_mass(attribute(model, x, y, method="saliency").numpy(), ink)
    # Gradients can fall anywhere; on a trained LeNet about three quarters fall within 2 px of the strokes.
    assert share > 0.6 and share > 1.7 * area, (share, area)
    share, _area = ink_mass(attribute(model, x, y).numpy(), ink)
    # Integrated Gradients from a black image: a black pixel has no path, so no attribution.
    assert share > 0.99, share


@pytest.mark.real_data
@requires_real_mnist
def test_reinitialised_weights_change_the_maps_on_real_digits(real_mnist):
    model, x, y = real_mnist
    ink = x[:, 0].numpy() > 0.1
    assert randomized_rank_correlation(model, x, y, "saliency") < 0.6
    # IG is zero off the ink by construction; compare where it can differ, with its sign.
    assert abs(randomized_rank_correlation(model, x, y, "integrated_gradients", where=ink, signed=True)) < 0.3


def test_attribution_sanity_checks_on_synthetic_digits(synthetic):
    model, x, y = synthetic
    bar = x[:, 0].numpy() > 0.5  # the class's bar; the rest is faint noise (never black, so IG is not trivial)
    for method in ("saliency", "integrated_gradients"):
        share, area = ink_mass(attribute(model, x, y, method=method).numpy(), bar)
        assert share > 2 * area, (method, share, area)
        assert randomized_rank_correlation(model, x, y, method) < 0.6, method


# --- what a user of explain relies on ------------------------------------------------------------

def test_lenet_explanation_has_every_layer_by_its_own_name_and_consistent_numbers():
    torch.manual_seed(0)
    model = create_model("lenet5").train()
    image = torch.rand(1, 28, 28)
    ex = explain(model, image, classes=[str(i) for i in range(10)])
    assert model.training  # the user's mode is put back
    assert list(ex.activations) == ["features.0", "features.1", "features.2", "features.3", "features.4",
                                    "features.5", "classifier.0", "classifier.1", "classifier.2",
                                    "classifier.3", "classifier.4"]
    assert ex.kinds["features.0"] == "conv" and ex.kinds["features.2"] == "pool"
    assert ex.kinds["features.1"] == "activation" and ex.kinds["classifier.4"] == "linear"
    assert ex.activations["features.0"].shape == (6, 28, 28) and ex.activations["features.5"].shape == (16, 5, 5)
    assert list(ex.maps()) == ["features.0", "features.2", "features.3", "features.5"]
    with torch.no_grad():
        logits = model.eval()(image.unsqueeze(0))[0]
    torch.testing.assert_close(ex.logits, logits)
    torch.testing.assert_close(ex.activations["classifier.4"], logits)
    assert ex.prediction.index == int(logits.argmax()) and ex.target == ex.prediction.index
    assert ex.attribution.shape == (28, 28)
    # Integrated Gradients' completeness: the map sums to logit(image) - logit(black image).
    with torch.no_grad():
        black = model(torch.zeros(1, 1, 28, 28))[0, ex.target]
    assert float(ex.attribution.sum()) == pytest.approx(float(logits[ex.target] - black), rel=0.05, abs=0.02)
    # The kernel view's arithmetic reproduces what the layer computed, including at the padded border.
    for layer, channel, pos in (("features.0", 2, (0, 0)), ("features.3", 5, None), ("features.3", 0, (9, 9))):
        k = ex.kernel(layer, channel, pos)
        assert k["value"] == pytest.approx(k["recorded"], abs=1e-4)
    ex7 = explain(model, image, target="7", classes=[str(i) for i in range(10)])
    assert ex7.target == 7 and ex7.summary()["target"] == {"label": "7", "index": 7}


def test_figures_are_inline_and_errors_name_the_value():
    model = create_model("lenet5")
    ex = explain(model, torch.rand(28, 28))
    for fig in (ex.plot_layers(), ex.plot_attribution(), ex.plot_kernel("features.3", 1)):
        assert isinstance(fig, InlineFigure) and fig._repr_png_()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="'classifier.0' is not a 2-D convolution.*features.0, features.3"):
        ex.kernel("classifier.0", 0)
    with pytest.raises(ConfigError, match="channel must be between 0 and 15"):
        ex.kernel("features.3", 16)
    with pytest.raises(ConfigError, match="target must be a class name or an index from 0 to 9"):
        explain(model, torch.rand(28, 28), target=10)
    with pytest.raises(ConfigError, match="unknown attribution method 'lime'"):
        explain(model, torch.rand(28, 28), method="lime")
    with pytest.raises(ConfigError, match="explain takes one image"):
        explain(model, torch.rand(2, 2, 1, 28, 28))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))  # a functional ReLU: not a module, so not recorded


class Odd(nn.Module):
    """A user's own network: a Sequential inside a ModuleList, a functional ReLU, an in-place ReLU, a reused ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([Block(), nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(inplace=True),
                                                            nn.AvgPool2d(2))])
        self.act = nn.ReLU()
        self.head = nn.Linear(8 * 13 * 13, 3)

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        x = self.act(x)
        x = self.act(x)  # the same module twice
        return self.head(x.flatten(1))


def test_explain_a_users_own_module_with_unusual_layers():
    torch.manual_seed(0)
    model = Odd()
    ex = explain(model, torch.rand(1, 28, 28), classes=["a", "b", "c"])
    assert list(ex.activations) == ["stages.0.conv", "stages.1.0", "stages.1.1", "stages.1.2", "act", "act:2",
                                    "head"]
    # The functional ReLU has no entry: the conv shows its own output, negatives included.
    assert ex.activations["stages.0.conv"].min() < 0
    # The in-place ReLU after stages.1.0 did not overwrite the conv's recorded output.
    assert ex.activations["stages.1.0"].min() < 0 and ex.activations["stages.1.1"].min() >= 0
    assert ex.kinds == {"stages.0.conv": "conv", "stages.1.0": "conv", "stages.1.1": "activation",
                        "stages.1.2": "pool", "act": "activation", "act:2": "activation", "head": "linear"}
    assert ex.prediction.label in {"a", "b", "c"} and ex.attribution.shape == (28, 28)
    k = ex.kernel("stages.1.0", 3, (4, 5))
    assert k["value"] == pytest.approx(k["recorded"], abs=1e-4) and k["window"].shape == (4, 3, 3)
    assert isinstance(ex.plot_layers(), InlineFigure)
    for method in ("saliency", "gradcam"):
        assert explain(model, torch.rand(1, 28, 28), method=method).attribution.shape == (28, 28)
    assert penultimate_features(model, torch.rand(5, 1, 28, 28)).shape == (5, 8 * 13 * 13)


def test_explain_takes_a_predictor_and_preprocesses_the_image(tiny_trained_run, tmp_path):
    import cnnlab
    from PIL import Image

    predictor = cnnlab.load(tiny_trained_run)
    path = tmp_path / "digit.png"
    pixels = np.zeros((40, 30), np.uint8)
    pixels[8:32, 13:17] = 255  # a "1" drawn white on black
    Image.fromarray(pixels).save(path)
    ex = explain(predictor, path)
    assert isinstance(ex, Explanation) and ex.input.shape == (1, 28, 28) and ex.classes == predictor.classes
    assert repr(ex).startswith("Explanation(prediction=")
    # The front door takes the run folder itself, and a bare module with its input tensor.
    from_run = cnnlab.explain(tiny_trained_run, path)
    torch.testing.assert_close(from_run.attribution, ex.attribution)
    from_module = cnnlab.explain(predictor.model, ex.input, target=ex.classes[3])
    assert from_module.target == 3 and from_module.prediction == ex.prediction
    files = ex.save(tmp_path / "out")
    assert [p.name for p in files][:2] == ["filters.png", "input.png"] and all(p.is_file() for p in files)


# --- the interpretation's view inside -----------------------------------------------------------

def test_interpretation_overlays_attributions_and_maps_the_embedding(tiny_trained_run):
    import cnnlab
    from cnnlab.analysis.interpret import Interpretation

    interp = cnnlab.interpret(tiny_trained_run)
    plain, heat = interp.plot_top_losses(4), interp.plot_top_losses(4, heatmap=True)
    assert isinstance(heat, InlineFigure) and plain._repr_png_() != heat._repr_png_()
    worst = interp.top_losses(4)
    maps = interp.attributions(worst)
    assert maps.shape == (4, 28, 28) and maps.abs().sum() > 0
    # The heat map explains the predicted class: the same as cnnlab.explain on that image.
    ex = explain(interp.model, to_float(torch.as_tensor(interp.predictions.images[worst[0]])))
    torch.testing.assert_close(maps[0], ex.attribution, atol=1e-5, rtol=1e-4)
    idx, points, method = interp.embedding(max_images=120)
    assert points.shape == (120, 2) and method in ("t-SNE", "UMAP") and np.isfinite(points).all()
    wrong = np.flatnonzero(~interp.predictions.correct)
    assert set(wrong[:60]) <= set(idx)  # misclassified images are kept in the sample
    assert interp.features().shape == (200, 84)  # LeNet-5's last Linear takes 84 features
    assert isinstance(interp.plot_embedding(max_images=120), InlineFigure)
    bare = Interpretation(torch.zeros(3, 10), torch.zeros(3), torch.zeros(3, 1, 28, 28, dtype=torch.uint8),
                          [str(i) for i in range(10)])
    with pytest.raises(ConfigError, match="holds no model"):
        bare.plot_top_losses(2, heatmap=True)
