"""Running the app: a listening socket with a clear error, uvicorn, and a server in a background thread.

``serve(run_dir)`` is what ``cnnlab serve`` runs; :class:`BackgroundServer` runs one from a
notebook or a test.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import threading
from pathlib import Path
from typing import Any, Callable

from cnnlab.apps.serve.app import create_app, require_web_stack
from cnnlab.apps.serve.limits import DEFAULT_MAX_BYTES, DEFAULT_READ_LIMITS, ReadLimits
from cnnlab.core.errors import CnnlabError
from cnnlab.core.i18n import _


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
        raise CnnlabError(_("cannot listen on {host}:{port}: unknown host ({strerror})").format(host=host, port=port, strerror=exc.strerror)) from None
    family, kind, proto, _canonname, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "; " + _("choose another --port") if exc.errno in (98, 48, 10048) else ""
        raise CnnlabError(_("cannot listen on {host}:{port}: {reason}{hint}").format(host=host, port=port, reason=exc.strerror or exc, hint=hint)) from None
    sock.setblocking(False)
    return sock


def _json_response(status: int, reason: str, code: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response with the API's JSON error body, for answers given below the app."""
    body = json.dumps({"error": code, "detail": detail}, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


def guarded_protocol(limits: ReadLimits) -> type:
    """uvicorn's h11 protocol with what uvicorn lacks: a deadline for the request headers, a cap on open
    connections (both answered in JSON, then closed), and JSON instead of plain text for malformed requests.

    uvicorn's ``timeout_keep_alive`` only covers an idle connection *between* requests: once a byte
    arrives it is off, so a client that sends half a header line was kept forever (issue 24: 3,071
    descriptors in 15 s). Here a timer runs from the connection (or the previous answer) to the end
    of the headers, as nginx's ``client_header_timeout`` does.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._refuse(503, "Service Unavailable", "busy",
                             _("the server has {max_connections} open connections, its limit; try again in a moment").format(max_connections=limits.max_connections))
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._waiting_for_headers():
                self._arm()
            super().data_received(data)
            if not self._waiting_for_headers():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(limits.header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                self._refuse(408, "Request Timeout", "timeout",
                             _("the request headers were not sent within {header_timeout_s:g} s").format(header_timeout_s=limits.header_timeout_s))

        def _refuse(self, status: int, reason: str, code: str, detail: str) -> None:
            self._disarm()
            self.transport.write(_json_response(status, reason, code, detail))
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            # h11 refused the request (a malformed Content-Length, a bad request line, headers over the limit):
            # answer in the API's JSON instead of uvicorn's plain text.
            self._refuse(400, "Bad Request", "bad_request",
                         _("malformed HTTP request (request line, headers or Content-Length), or headers over "
                           "{max_header_bytes:,} bytes").format(max_header_bytes=limits.max_header_bytes))

    return GuardedH11Protocol


def make_server(app: Any, *, log_level: str = "info", limits: ReadLimits = DEFAULT_READ_LIMITS) -> Any:
    """A uvicorn server for ``app`` (run it with ``server.run(sockets=[bind_socket(...)])``), with ``limits``.

    uvicorn's own settings first: ``timeout_keep_alive`` (idle between requests),
    ``timeout_graceful_shutdown`` (SIGTERM ends within seconds even with stalled clients),
    ``h11_max_incomplete_event_size`` (headers), ``limit_concurrency`` (a backstop one above the
    protocol's own connection cap, whose 503 is JSON). What uvicorn lacks is in
    :func:`guarded_protocol`; the body limits are the app's (:class:`BodyLimitMiddleware`).
    """
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, http=guarded_protocol(limits),
                            timeout_keep_alive=limits.keep_alive_s,
                            timeout_graceful_shutdown=limits.graceful_shutdown_s,
                            h11_max_incomplete_event_size=limits.max_header_bytes,
                            limit_concurrency=limits.max_connections + 1,
                            server_header=False, proxy_headers=False)
    return uvicorn.Server(config)


class BackgroundServer:
    """A server running in a daemon thread (notebooks, tests); ``stop()`` or use it as a context manager."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                 limits: ReadLimits = DEFAULT_READ_LIMITS) -> None:
        self._sock = bind_socket(host, port)
        bound_host, self.port = self._sock.getsockname()[:2]
        self.host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{self.host}:{self.port}"
        self.server = make_server(app, log_level=log_level, limits=limits)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="cnnlab-serve", daemon=True)
        self._thread.start()
        # Wait for the startup to finish, so the first request never races it.
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not self.server.started:
            self.stop()
            raise CnnlabError(_("the server on {url} did not start; see the log above").format(url=self.url))

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
    limits: ReadLimits = DEFAULT_READ_LIMITS,
) -> None:
    """Load a run's model and serve the drawing page and API until Ctrl+C or SIGTERM (docs/serve.md, "Limits")."""
    require_web_stack()
    app = create_app(run_dir, max_bytes=max_bytes, device=device, read_limits=limits)
    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if not is_loopback(host):
        log(_("warning: listening on {host}, not on this machine only: anyone who can reach this "
              "machine can use the server").format(host=host))
    log(_("serving {run} on {url}  (API docs: /docs; Ctrl+C to stop)").format(
        run=run_dir, url=f"http://{shown}:{bound_port}/"))
    try:
        make_server(app, limits=limits).run(sockets=[sock])
    finally:
        sock.close()
