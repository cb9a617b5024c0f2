"""``POST /api/explain``: the shapes of its answer, that its numbers are the model's, and its errors."""
from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (dev extra)")

from fastapi.testclient import TestClient  # noqa: E402

from test_serve import MAX_BYTES, client, digit_image, png_bytes, predictor  # noqa: E402,F401 (fixtures)

PNG = {"Content-Type": "image/png"}


def array(entry: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry["f32"]), dtype="<f4").reshape(entry["shape"])


def test_explain_answers_each_conv_and_pool_layers_maps_kernels_and_the_attribution(client, predictor):
    data = png_bytes(digit_image(2))
    r = client.post("/api/explain?top_k=3", content=data, headers=PNG)
    assert r.status_code == 200, r.text
    body = r.json()
    predicted = client.post("/api/predict?top_k=3", content=data, headers=PNG).json()
    assert body["label"] == predicted["label"] and len(body["top_k"]) == 3
    assert body["top_k"][0]["prob"] == pytest.approx(predicted["top_k"][0]["prob"], abs=1e-5)
    assert body["input_png"] == predicted["input_png"] and body["input_shape"] == [1, 28, 28]
    layers = {layer["name"]: layer for layer in body["layers"]}
    assert list(layers) == ["features.0", "features.2", "features.3", "features.5"] and body["left_out"] == []
    assert [layers[n]["kind"] for n in layers] == ["conv", "pool", "conv", "pool"]
    shapes = {n: layer["shape"] for n, layer in layers.items()}
    assert shapes == {"features.0": [6, 28, 28], "features.2": [6, 14, 14], "features.3": [16, 10, 10],
                      "features.5": [16, 5, 5]}
    # The maps are the model's own activations, exactly.
    from cnnlab.analysis.explain import explain

    x = predictor.to_input(Image.open(io.BytesIO(data)))
    ex = explain(predictor.model, x, classes=predictor.classes)
    for name in layers:
        np.testing.assert_allclose(array({"shape": layers[name]["shape"], "f32": layers[name]["maps"]}),
                                   ex.activations[name].numpy(), atol=1e-6)
    # A conv layer carries what the page needs for the arithmetic at any position: it adds up.
    conv = layers["features.3"]["conv"]
    inp, w, b = array(conv["input"]), array(conv["weight"]), conv["bias"]
    assert inp.shape == (6, 14, 14) and w.shape == (16, 6, 5, 5) and len(b) == 16 and conv["stride"] == [1, 1]
    value = float((inp[:, 2:7, 3:8] * w[4]).sum() + b[4])
    assert value == pytest.approx(float(ex.activations["features.3"][4, 2, 3]), abs=1e-4)
    assert layers["features.0"]["conv"]["padding"] == [2, 2]
    assert layers["features.2"]["pool"]["kernel_size"] == 2
    att = body["attribution"]
    assert att["shape"] == [28, 28] and att["method"] == "integrated_gradients" and att["target"] == body["label"]
    np.testing.assert_allclose(array(att), ex.attribution.numpy(), atol=1e-5)
    assert att["max_abs"] == pytest.approx(float(ex.attribution.abs().max()), rel=1e-5)


def test_explain_has_the_same_errors_and_limits_as_predict(client, predictor):
    good = png_bytes(digit_image(0))
    cases = [
        (b"not an image", PNG, 400, "not_an_image"),
        (good[: len(good) // 2], PNG, 400, "not_an_image"),
        (png_bytes(Image.new("L", (100, 100), 0)), PNG, 400, "unusable_image"),
        (b"", PNG, 400, "empty"),
        (good, {"Content-Type": "text/plain"}, 415, "unsupported_type"),
        (b"\x89PNG" + os.urandom(MAX_BYTES), PNG, 413, "too_large"),
    ]
    for data, headers, status, code in cases:
        r = client.post("/api/explain", content=data, headers=headers)
        assert r.status_code == status and r.json()["error"] == code, (code, r.text)
        assert r.headers["content-type"] == "application/json"
    r = client.post("/api/explain?top_k=0", content=good, headers=PNG)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = client.post("/api/explain", files={"file": ("d.png", good, "image/png")})
    assert r.status_code == 200 and r.json()["layers"]
    from cnnlab.apps.serve import create_app

    with TestClient(create_app(predictor, max_pixels=100 * 100)) as c:
        r = c.post("/api/explain", content=png_bytes(Image.new("L", (400, 300), 0)), headers=PNG)
        assert r.status_code == 413 and r.json()["error"] == "too_many_pixels"
    # Still serving after all that.
    assert client.post("/api/explain", content=good, headers=PNG).status_code == 200


def test_explain_goes_through_the_memory_gate(predictor, monkeypatch):
    from cnnlab.apps.serve import app as serve_app
    from cnnlab.apps.serve.limits import DecodeGate

    admitted = []
    real = DecodeGate.admit

    def spy(self, cost):
        admitted.append(cost)
        return real(self, cost)

    monkeypatch.setattr(DecodeGate, "admit", spy)
    classify = serve_app.Classifier(predictor, DecodeGate(64 * 2**20, 1), max_pixels=10**6,
                                    max_decoded_bytes=10**8)
    body = classify.explain(png_bytes(digit_image(1)), 3)
    assert admitted and admitted[0] > 0 and body["layers"]
    assert not predictor.model.training  # the served model is left in eval mode
