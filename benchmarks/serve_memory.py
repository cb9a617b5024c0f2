"""Peak memory of `cnnlab serve` under concurrent worst-case uploads.

    python benchmarks/serve_memory.py RUN_DIR --clients 16 --out benchmarks/results/serve_memory.json

The worst case inside the default limits: a 5000x5000 16-bit RGBA PNG (25 megapixels, the pixel
limit; ~200 KB on the wire, 200 MB decoded) holding a dark stroke on a transparent canvas, so it
takes the most expensive decoding path (alpha compositing) and is classified, not refused. The
script starts `cnnlab serve` in a subprocess, sends one small request to warm it up, then
``--clients`` uploads of that PNG at once, ``--rounds`` times, and reads the server's peak
resident memory from ``/proc/PID/status`` (``VmHWM``, the kernel's high-water mark) and its
resident memory after the burst (``VmRSS``).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from provenance import machine_provenance  # benchmarks/ is on sys.path when run as a script

SIDE = 5000


def worst_case_png(path: Path) -> bytes:
    """A SIDE x SIDE 16-bit RGBA PNG: transparent, with an opaque dark diagonal band (cached in ``path``)."""
    if path.exists():
        return path.read_bytes()
    compressor = zlib.compressobj(9)
    out = io.BytesIO()
    for y in range(SIDE):
        row = np.zeros((SIDE, 4), dtype=">u2")
        lo, hi = max(0, y - 400), min(SIDE, y + 400)  # a thick stroke from corner to corner
        row[lo:hi, 3] = 65535
        row[lo:hi, :3] = 3000
        out.write(compressor.compress(b"\x00" + row.tobytes()))
    out.write(compressor.flush())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", SIDE, SIDE, 16, 6, 0, 0, 0))
           + chunk(b"IDAT", out.getvalue()) + chunk(b"IEND", b""))
    path.write_bytes(png)
    return png


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, results: list, timeout: float) -> None:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"}, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
            results.append((resp.status, payload.get("label"), time.perf_counter() - start))
    except urllib.error.HTTPError as exc:
        payload = json.loads(exc.read() or b"{}")
        results.append((exc.code, payload.get("error"), time.perf_counter() - start))
    except Exception as exc:  # noqa: BLE001 - a dropped connection is a result to report
        results.append(("failed", type(exc).__name__, time.perf_counter() - start))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--png", default="/tmp/cnnlab-worst-case-16bit-rgba.png")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    png = worst_case_png(Path(args.png))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", args.run_dir, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/api/predict"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    print(server.stdout.read() if server.stdout else "", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        warm: list = []
        post(url, png, warm, args.timeout)  # one worst-case request alone
        alone = proc_status(server.pid)
        rounds = []
        for _ in range(args.rounds):
            results: list = []
            threads = [threading.Thread(target=post, args=(url, png, results, args.timeout)) for _ in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rounds.append({"seconds": round(time.perf_counter() - t0, 2),
                           "answers": dict(Counter(f"{s} {what}" for s, what, _ in results)),
                           "peak_rss_so_far_mb": round(proc_status(server.pid)["VmHWM"] / 2**20)})
        time.sleep(2)
        after = proc_status(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    mb = lambda n: round(n / 2**20)  # noqa: E731
    summary = {
        "command": "python benchmarks/serve_memory.py " + " ".join(sys.argv[1:]),
        "image": f"{SIDE}x{SIDE} 16-bit RGBA PNG, {len(png) / 1024:.0f} KB",
        "clients": args.clients,
        "one_request": {"answer": f"{warm[0][0]} {warm[0][1]}", "peak_rss_mb": mb(alone["VmHWM"])},
        "rounds": rounds,
        "peak_rss_mb": mb(after["VmHWM"]),
        "rss_after_mb": mb(after["VmRSS"]),
        "cpus": os.cpu_count(),
        "provenance": machine_provenance(),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
