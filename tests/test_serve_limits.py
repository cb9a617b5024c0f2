"""The server cannot be starved, and stops when told (issue 24): a real uvicorn server on a socket,
with short limits so that each case takes a second or two."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

from cnnlab.apps.serve import BackgroundServer, ReadLimits, create_app  # noqa: E402

FAST = ReadLimits(header_timeout_s=1.0, body_timeout_s=1.0, min_body_rate=500, body_idle_s=1.0,
                  max_connections=8, keep_alive_s=1.0, graceful_shutdown_s=1.0)
PNG_HEAD = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"


@pytest.fixture(scope="module")
def predictor(tiny_trained_run: Path):
    from cnnlab.service.predictor import load

    return load(tiny_trained_run)


@pytest.fixture
def server(predictor):
    app = create_app(predictor, max_requests=4, read_limits=FAST)
    with BackgroundServer(app, limits=FAST) as srv:
        yield srv


def read_reply(s: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the answer; the server closes the connection after it."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(re.match(rb"HTTP/1.1 (\d+)", head).group(1))
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def model_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /api/model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.startswith(b"HTTP/1.1 200")


def test_a_body_that_trickles_is_cut_off_with_408(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(PNG_HEAD + b"Content-Length: 1000\r\n\r\n0123456789")  # 10 of 1,000 bytes, then nothing
        status, body = read_reply(s)
    assert status == 408 and body["error"] == "timeout"
    assert time.monotonic() - t0 < 5


def test_headers_never_finished_are_cut_off(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Ty")
        status, body = read_reply(s)
    assert status == 408 and body["error"] == "timeout"


def test_slow_uploads_do_not_take_the_request_slots(server) -> None:
    """max_requests is 4: six stalled uploads used to hold every slot; now answers go on."""
    stalled = []
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(PNG_HEAD + b"Content-Length: 1000\r\n\r\n0123456789")
        stalled.append(s)
    try:
        assert model_ok(server.port)
    finally:
        for s in stalled:
            s.close()


def test_open_connections_are_capped_with_a_json_503(server) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(FAST.max_connections)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            status, body = read_reply(s)
        assert status == 503 and body["error"] == "busy"
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert model_ok(server.port)


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1, 2"])
def test_a_malformed_content_length_gets_a_json_400(server, length) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(PNG_HEAD + b"Content-Length: " + length + b"\r\n\r\n")
        status, body = read_reply(s)
    assert status == 400 and body["error"] == "bad_request"


def test_sigterm_exits_143_within_seconds_with_stalled_clients(tiny_trained_run: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(tiny_trained_run), "--port", "0",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        port = int(re.search(r":(\d+)/", proc.stdout.readline()).group(1))
        clients = []
        for _ in range(4):  # an upload stalled mid-body and one stalled mid-headers, twice
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(PNG_HEAD + b"Content-Length: 1000\r\n\r\n0123456789")
            clients.append(s)
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHo")
            clients.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        assert code == 143
        assert time.monotonic() - t0 < 10  # the default graceful shutdown is 3 s
    finally:
        proc.kill()
        for s in clients:
            s.close()
