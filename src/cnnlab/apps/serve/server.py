"""Running the app: a listening socket with a clear error, uvicorn, and a server in a background thread.

``serve(run_dir)`` is what ``cnnlab serve`` runs; :class:`BackgroundServer` runs one from a
notebook or a test.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path
from typing import Any, Callable

from cnnlab.apps.serve.app import create_app, require_web_stack
from cnnlab.apps.serve.limits import DEFAULT_MAX_BYTES
from cnnlab.core.errors import CnnlabError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; a clear error when the address is taken or unknown."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CnnlabError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "; choose another --port" if exc.errno in (98, 48, 10048) else ""
        raise CnnlabError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.setblocking(False)
    return sock


def make_server(app: Any, *, log_level: str = "info") -> Any:
    """A uvicorn server for ``app`` (run it with ``server.run(sockets=[bind_socket(...)])``)."""
    import uvicorn

    # Idle keep-alive is capped; concurrent requests are capped by the app (ConcurrencyLimitMiddleware,
    # JSON 503), not by uvicorn's limit_concurrency, whose 503 is plain text.
    config = uvicorn.Config(app, log_level=log_level, timeout_keep_alive=5,
                            server_header=False, proxy_headers=False)
    return uvicorn.Server(config)


class BackgroundServer:
    """A server running in a daemon thread (notebooks, tests); ``stop()`` or use it as a context manager."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> None:
        self._sock = bind_socket(host, port)
        bound_host, self.port = self._sock.getsockname()[:2]
        self.host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{self.host}:{self.port}"
        self.server = make_server(app, log_level=log_level)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="cnnlab-serve", daemon=True)
        self._thread.start()
        # Wait for the startup to finish, so the first request never races it.
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not self.server.started:
            self.stop()
            raise CnnlabError(f"the server on {self.url} did not start; see the log above")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> None:
    """Load a run's model and serve the drawing page and API until Ctrl+C."""
    require_web_stack()
    app = create_app(run_dir, max_bytes=max_bytes, device=device)
    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if not is_loopback(host):
        log(f"warning: listening on {host}, not on this machine only: anyone who can reach this "
            "machine can use the server")
    log(f"serving {run_dir} on http://{shown}:{bound_port}/  (API docs: /docs; Ctrl+C to stop)")
    try:
        make_server(app).run(sockets=[sock])
    finally:
        sock.close()
