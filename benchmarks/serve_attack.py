"""An honest client against `cnnlab serve` while slow clients attack it, then SIGTERM (issue 24).

    python benchmarks/serve_attack.py --seconds 40 --slow 64 --stalled 64

Trains a tiny run on synthetic MNIST-format data, starts ``cnnlab serve`` on it (default limits,
docs/serve.md "Limits"), then at once:

* ``--slow`` clients each declare a 1,000-byte upload, send 10 bytes of it and stall (the issue's
  starvation attack); when the server cuts one off, it reconnects and does it again;
* ``--stalled`` clients each send half a request line and never finish their headers, reconnecting
  likewise;
* one honest client POSTs a 28x28 PNG every 0.2 s and records each answer's status and latency.

It samples the server's open file descriptors every second, and at the end sends SIGTERM with every
attacker still connected and times the exit. Prints one JSON document (figures in
benchmarks/README.md, "Slow clients").
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_mnist_folder  # noqa: E402  (the tests' synthetic MNIST writer)
from provenance import machine_provenance  # benchmarks/ is on sys.path when run as a script


def png_bytes() -> bytes:
    img = np.zeros((28, 28), dtype=np.uint8)
    img[6:22, 12:16] = 255  # a "1"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def post(port: int, body: bytes, timeout: float = 10.0) -> tuple[int, float]:
    """(status, seconds) of one POST /api/predict over a fresh connection; status 0: no answer."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        m = re.match(rb"HTTP/1.1 (\d+)", data)
        return (int(m.group(1)) if m else 0), time.perf_counter() - t0
    except OSError:
        return 0, time.perf_counter() - t0


class Attacker(threading.Thread):
    """Holds one connection in a slow state; reconnects whenever the server closes it."""

    def __init__(self, port: int, kind: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.kind, self.stop = port, kind, stop
        self.cut_after: list[float] = []  # seconds each connection lasted before the server closed it
        self.refused = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                self.refused += 1
                time.sleep(0.2)
                continue
            t0 = time.perf_counter()
            try:
                if self.kind == "slow":
                    s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                              b"Content-Length: 1000\r\n\r\n0123456789")
                else:
                    s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Ty")
                s.settimeout(1.0)
                while not self.stop.is_set():
                    try:
                        if not s.recv(4096):
                            self.cut_after.append(time.perf_counter() - t0)
                            break
                    except socket.timeout:
                        continue
            except OSError:
                self.cut_after.append(time.perf_counter() - t0)
            finally:
                s.close()


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--slow", type=int, default=64)
    ap.add_argument("--stalled", type=int, default=64)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_mnist_folder(Path(tmp) / "data")
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "cnnlab", "train", "--data-dir", str(data), "--run-dir", str(run),
                        "--epochs", "1", "--val-size", "100", "--no-progress", "--threads", "1", "--no-train-eval"],
                       check=True, capture_output=True, env=env)
        server = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(run), "--port", "0", "--device", "cpu"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        line = server.stdout.readline()
        port = int(re.search(r":(\d+)/", line).group(1))
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()  # drain the log
        body = png_bytes()
        assert post(port, body)[0] == 200
        fds_idle = open_fds(server.pid)

        stop = threading.Event()
        attackers = [Attacker(port, "slow", stop) for _ in range(args.slow)]
        attackers += [Attacker(port, "stalled", stop) for _ in range(args.stalled)]
        for a in attackers:
            a.start()
        time.sleep(1.0)
        answers: list[tuple[float, int, float]] = []
        fds: list[int] = []
        t_start = time.perf_counter()
        next_fd = t_start
        while time.perf_counter() - t_start < args.seconds:
            status, seconds = post(port, body)
            answers.append((time.perf_counter() - t_start, status, seconds))
            if time.perf_counter() >= next_fd:
                fds.append(open_fds(server.pid))
                next_fd += 1.0
            time.sleep(0.2)
        connected = sum(1 for a in attackers if a.is_alive())
        t_term = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "still running after 60 s"
        exit_s = time.perf_counter() - t_term
        stop.set()

    ok = [s for _, st, s in answers if st == 200]
    slow_cuts = [c for a in attackers if a.kind == "slow" for c in a.cut_after]
    stalled_cuts = [c for a in attackers if a.kind == "stalled" for c in a.cut_after]
    print(json.dumps({
        "attack_seconds": args.seconds, "slow_clients": args.slow, "stalled_clients": args.stalled,
        "honest_requests": len(answers), "honest_200": len(ok),
        "honest_statuses": {str(k): sum(1 for _, st, _ in answers if st == k) for k in sorted({st for _, st, _ in answers})},
        "honest_latency_median_s": round(statistics.median(ok), 4) if ok else None,
        "honest_latency_max_s": round(max(ok), 4) if ok else None,
        "slow_cut_off_after_s_median": round(statistics.median(slow_cuts), 2) if slow_cuts else None,
        "stalled_cut_off_after_s_median": round(statistics.median(stalled_cuts), 2) if stalled_cuts else None,
        "server_fds_idle": fds_idle, "server_fds_max_under_attack": max(fds) if fds else None,
        "attackers_connected_at_sigterm": connected,
        "sigterm_exit_code": code, "sigterm_exit_s": round(exit_s, 2),
        "provenance": machine_provenance(),
    }, indent=2))


if __name__ == "__main__":
    main()
