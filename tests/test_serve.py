"""``cnnlab serve``: the JSON API through FastAPI's TestClient, and the real server's size limit."""
from __future__ import annotations

import base64
import io
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (dev extra)")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import synthetic_digits  # noqa: E402

MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def predictor(tiny_trained_run: Path):
    from cnnlab.service.predictor import load

    return load(tiny_trained_run)


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    from cnnlab.apps.serve import create_app

    with TestClient(create_app(predictor, max_bytes=MAX_BYTES)) as c:
        yield c


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def digit_image(i: int = 0, scale: int = 4) -> Image.Image:
    """One synthetic digit (white bar on dark noise), upscaled like a drawing on a canvas."""
    x, _ = synthetic_digits(8, seed=7)
    return Image.fromarray(x[i]).resize((28 * scale, 28 * scale), Image.NEAREST)


def test_model_info(client: TestClient, predictor) -> None:
    r = client.get("/api/model")
    assert r.status_code == 200
    info = r.json()
    assert info["classes"] == [str(c) for c in predictor.classes] == [str(i) for i in range(10)]
    assert info["preprocess"]["style"] == "mnist"  # the spec stored in the checkpoint
    assert info["max_bytes"] == MAX_BYTES
    assert info["default_top_k"] == 3


def test_predict_raw_png_matches_the_predictor(client: TestClient, predictor) -> None:
    img = digit_image(0)
    r = client.post("/api/predict", content=png_bytes(img), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    # Same preprocessing and model as `cnnlab predict`: the answers agree exactly.
    direct = predictor.predict([img.convert("L")], top_k=3)[0]
    assert [c["label"] for c in body["top_k"]] == [str(lab) for lab in direct.labels]
    assert [c["prob"] for c in body["top_k"]] == pytest.approx([float(p) for p in direct.probs], abs=1e-6)
    assert body["label"] == body["top_k"][0]["label"] and body["prob"] == body["top_k"][0]["prob"]
    probs = [c["prob"] for c in body["top_k"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert body["source_size"] == [112, 112]
    assert body["input_shape"] == [1, 28, 28]
    # The image the model saw comes back as a 28x28 PNG, equal to the predictor's input tensor.
    prefix = "data:image/png;base64,"
    assert body["input_png"].startswith(prefix)
    seen = Image.open(io.BytesIO(base64.b64decode(body["input_png"][len(prefix):])))
    assert seen.size == (28, 28)
    expected = (direct.input[0].clamp(0, 1) * 255).round().numpy().astype(np.uint8)
    assert np.abs(np.asarray(seen.convert("L"), dtype=int) - expected).max() <= 1


def test_multipart_upload_gives_the_same_answer_as_a_raw_body(client: TestClient) -> None:
    data = png_bytes(digit_image(1))
    raw = client.post("/api/predict", content=data, headers={"Content-Type": "application/octet-stream"})
    multi = client.post("/api/predict", files={"file": ("digit.png", data, "image/png")})
    assert raw.status_code == multi.status_code == 200
    assert raw.json() == multi.json()


def test_top_k_parameter(client: TestClient) -> None:
    data = png_bytes(digit_image(2))
    r = client.post("/api/predict?top_k=10", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    top = r.json()["top_k"]
    assert sorted(c["label"] for c in top) == [str(i) for i in range(10)]
    assert sum(c["prob"] for c in top) == pytest.approx(1.0, abs=1e-5)
    for bad in ("0", "11", "x"):
        r = client.post(f"/api/predict?top_k={bad}", content=data, headers={"Content-Type": "image/png"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_bad_images_get_a_400_json_error(client: TestClient) -> None:
    good = png_bytes(digit_image(0))
    cases = {
        "text": b"this is not an image at all",
        "truncated png": good[: len(good) // 2],
        "html": b"<html><body>hi</body></html>",
    }
    for name, data in cases.items():
        r = client.post("/api/predict", content=data, headers={"Content-Type": "image/png"})
        assert r.status_code == 400, name
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "not_an_image" and r.json()["detail"], name
    r = client.post("/api/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 400 and r.json()["error"] == "not_an_image"
    blank = png_bytes(Image.new("L", (100, 100), 0))  # no ink: nothing to classify
    r = client.post("/api/predict", content=blank, headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and r.json()["error"] == "unusable_image" and "blank" in r.json()["detail"]
    r = client.post("/api/predict", content=b"", headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and r.json()["error"] == "empty"


def test_wrong_content_type_gets_415(client: TestClient) -> None:
    data = png_bytes(digit_image(0))
    for ctype in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
        r = client.post("/api/predict", content=data, headers={"Content-Type": ctype})
        assert r.status_code == 415, ctype
        assert r.json()["error"] == "unsupported_type" and ctype in r.json()["detail"]
    r = client.post("/api/predict", content=data)  # no Content-Type at all
    assert r.status_code == 415
    r = client.post("/api/predict", files={"other": ("d.png", data, "image/png")})
    assert r.status_code == 400 and r.json()["error"] == "no_file"


def test_too_large_requests_get_413(client: TestClient) -> None:
    big = b"\x89PNG" + os.urandom(MAX_BYTES)  # just over the limit
    r = client.post("/api/predict", content=big, headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = client.post("/api/predict", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    # No Content-Length (chunked): the body is counted as it arrives and cut off at the limit.
    def chunks():
        for _ in range(8):
            yield b"\0" * (MAX_BYTES // 4)

    r = client.post("/api/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_too_many_pixels_gets_413(predictor) -> None:
    from cnnlab.apps.serve import create_app

    with TestClient(create_app(predictor, max_pixels=100 * 100)) as c:
        small_file = png_bytes(Image.new("L", (400, 300), 0))  # a few hundred bytes, 120,000 pixels
        r = c.post("/api/predict", content=small_file, headers={"Content-Type": "image/png"})
        assert r.status_code == 413 and r.json()["error"] == "too_many_pixels" and "400x300" in r.json()["detail"]


def test_still_serving_after_bad_requests(client: TestClient) -> None:
    good = png_bytes(digit_image(3))
    first = client.post("/api/predict", content=good, headers={"Content-Type": "image/png"}).json()
    for _ in range(3):
        assert client.post("/api/predict", content=b"junk", headers={"Content-Type": "image/png"}).status_code == 400
        assert client.post("/api/predict", content=b"x" * (MAX_BYTES + 1), headers={"Content-Type": "image/png"}).status_code == 413
        assert client.post("/api/predict", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
        assert client.get("/api/predict").status_code == 405
        assert client.get("/nope").json()["error"] == "not_found"
    again = client.post("/api/predict", content=good, headers={"Content-Type": "image/png"})
    assert again.status_code == 200 and again.json() == first
    assert client.get("/api/model").status_code == 200


def test_page_static_files_and_openapi(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in r.text and 'id="clear"' in r.text and 'id="upload"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "pointerdown" in js.text and "/api/predict" in js.text
    assert client.get("/static/style.css").status_code == 200
    for path in ("/static/..%2Fserve.py", "/static/missing.js", "/static/index.html"):
        assert client.get(path).status_code == 404, path
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
    assert "/api/model" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_requests_write_nothing_to_disk(predictor, tiny_trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.apps.serve import create_app

    monkeypatch.chdir(tmp_path)
    before = sorted(p for p in tiny_trained_run.rglob("*"))
    with TestClient(create_app(predictor)) as c:  # default 5 MiB limit: a 2 MiB part is spooled by Starlette
        pixels = np.random.default_rng(0).integers(0, 40, (900, 900, 3), dtype=np.uint8)  # noise: PNG cannot shrink it
        pixels[300:400, 150:750] = 255  # and a bright bar, like the synthetic digits
        big_png = png_bytes(Image.fromarray(pixels))
        assert len(big_png) > 1024 * 1024
        assert c.post("/api/predict", files={"file": ("big.png", big_png, "image/png")}).status_code == 200
        assert c.post("/api/predict", content=png_bytes(digit_image(0)), headers={"Content-Type": "image/png"}).status_code == 200
    assert sorted(p for p in tiny_trained_run.rglob("*")) == before
    assert list(tmp_path.iterdir()) == []


def test_real_server_refuses_a_large_declared_body_without_reading_it(predictor) -> None:
    from cnnlab.apps.serve import BackgroundServer, create_app

    with BackgroundServer(create_app(predictor, max_bytes=MAX_BYTES)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            # Headers announce 100 MB, but no body byte is ever sent: the answer must come anyway.
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 100000000\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):  # the server closes the connection after its answer
                reply += chunk
            reply = reply.decode("latin-1")
        assert reply.startswith("HTTP/1.1 413")
        assert '"error": "too_large"' in reply or '"error":"too_large"' in reply
        # ... and the server still answers.
        import urllib.request

        with urllib.request.urlopen(f"{server.url}/api/model", timeout=30) as resp:
            assert resp.status == 200


def test_bind_socket_reports_a_busy_port_clearly() -> None:
    from cnnlab.core.errors import CnnlabError
    from cnnlab.apps.serve import bind_socket, is_loopback

    first = bind_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(CnnlabError, match=f"cannot listen on 127.0.0.1:{port}.*another --port"):
            bind_socket("127.0.0.1", port)
    finally:
        first.close()
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_cli_serve_bad_run_dir_is_one_clear_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cnnlab.apps.cli import cli

    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "missing"), "--port", "0"])
    assert result.exit_code != 0
    assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_missing_web_stack_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from cnnlab.core.errors import CnnlabError
    from cnnlab.apps.serve import create_app

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[serve\]'"):
        create_app("anything")


# --- bounded memory and busy answers (issue 16; peak RSS: benchmarks/serve_memory.py) ----------------


def test_decoded_size_cap_is_413_json_before_decoding(predictor) -> None:
    from cnnlab.apps.serve import create_app

    with TestClient(create_app(predictor, max_decoded_bytes=100_000)) as c:
        r = c.post("/api/predict", content=png_bytes(Image.new("RGBA", (200, 200), 0)),
                   headers={"Content-Type": "image/png"})  # 40,000 pixels, 160,000 bytes decoded
        assert r.status_code == 413 and r.json()["error"] == "too_large_decoded"
        assert "200x200 RGBA" in r.json()["detail"]
        ok = c.post("/api/predict", content=png_bytes(digit_image()), headers={"Content-Type": "image/png"})
        assert ok.status_code == 200  # 112x112 grey: 12,544 bytes


def test_over_the_request_limit_is_a_json_503(predictor) -> None:
    from cnnlab.apps.serve import create_app

    with TestClient(create_app(predictor, max_requests=0)) as c:
        r = c.get("/api/model")
        assert r.status_code == 503 and r.json()["error"] == "busy" and r.headers["retry-after"] == "1"


def test_decode_gate_bounds_memory_and_answers_busy() -> None:
    import threading
    import time

    from cnnlab.apps.serve import ApiError, DecodeGate

    gate = DecodeGate(budget=100, slots=4, wait_s=0.3, queue_factor=2)
    with gate.admit(80):
        # 80 + 30 > 100: a second decode waits, and gives up with a 503 after wait_s
        with pytest.raises(ApiError) as err:
            with gate.admit(30):
                pass
        assert err.value.status == 503 and err.value.code == "busy"
        with gate.admit(20):  # fits beside it
            assert gate.running == 2 and gate.in_use == 100
    with gate.admit(500):  # over the budget alone: runs, alone
        assert gate.running == 1

    order: list[str] = []
    first = gate.admit(90)
    first.__enter__()
    waiter = threading.Thread(target=lambda: (gate.admit(90).__enter__(), order.append("second ran")))
    waiter.start()
    time.sleep(0.05)
    with pytest.raises(ApiError):  # 90 running + 90 queued + 90 > 2 budgets: refused at once, no wait
        t0 = time.perf_counter()
        with gate.admit(90):
            pass
    assert time.perf_counter() - t0 < 0.2
    first.__exit__(None, None, None)
    waiter.join(2)
    assert order == ["second ran"]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16"])
def test_block_wise_conversion_equals_the_whole_image(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    from cnnlab.data import images

    rng = np.random.default_rng(3)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size=(300, 200), dtype=np.uint16))
        assert img.mode.startswith("I;16")
    else:
        rgba = rng.integers(0, 256, size=(300, 200, 4), dtype=np.uint8)
        rgba[:, :80, 3] = 0  # a transparent margin
        img = Image.fromarray(rgba, "RGBA").convert(mode)
    whole = images.to_standard_mode(img)
    monkeypatch.setattr(images, "BLOCK_PIXELS", 7 * 200 + 13)  # 7 rows a block, the last one short
    blocks = images.to_standard_mode(img)
    assert whole.mode == blocks.mode and np.array_equal(np.asarray(whole), np.asarray(blocks))
