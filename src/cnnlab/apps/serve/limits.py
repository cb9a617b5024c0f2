"""The server's limits: request bodies, requests in flight, and the memory that decoding may use.

Every refusal is a JSON answer ``{"error": code, "detail": sentence}`` with a 4xx/503 status, and the
server keeps serving (docs/serve.md).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from cnnlab.core.i18n import _
from cnnlab.data.images import MAX_PIXELS

DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # a phone photo of a digit fits; a canvas PNG is ~10 KB
# The one pixel limit (data/images.MAX_PIXELS): larger images are refused from their header, before decoding.
DEFAULT_MAX_PIXELS = MAX_PIXELS
# Decoded size in memory (PIL keeps multi-band pixels in 4 bytes): 25 megapixels of RGBA fit.
DEFAULT_MAX_DECODED_BYTES = 100 * 2**20
# Memory that concurrent decodes may use together (estimated, see decode_cost). A request over
# it alone still runs, alone: a worst-case 25-megapixel upload costs ~500 MB, so those go one at a
# time while small drawings (~2 MB each) run side by side, one per core (issue 16, benchmarks/serve_memory.py).
DEFAULT_DECODE_MEMORY = 512 * 2**20
# In-flight requests beyond this are answered 503 at once (JSON); uploads waiting for the decode
# budget longer than BUSY_WAIT_S get 503 too, so a burst cannot queue work without end.
DEFAULT_MAX_REQUESTS = 64
BUSY_WAIT_S = 60.0
DEFAULT_TOP_K = 3


class ApiError(Exception):
    """A refused request: becomes ``{"error": code, "detail": detail}`` with ``status``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class BodyTooLarge(Exception):
    """Raised from ``receive`` the moment a body passes the limit."""


class BodyTimeout(Exception):
    """A body not sent within the :class:`ReadLimits` timeouts."""


class BufferFull(Exception):
    """Request bodies held in memory would pass ``ReadLimits.buffer_budget``."""


class Disconnected(Exception):
    """The client went away before its body was complete."""


def human_bytes(n: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Bytes PIL holds for the decoded image: 1 per pixel for 1/L/P, 2 for 16-bit grey, else 4."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return width * height * per_pixel


def decode_cost(width: int, height: int, mode: str) -> int:
    """Estimated peak memory of decoding and preprocessing one image (measured: ~21 bytes/pixel
    for a 25-megapixel RGBA PNG, its decoded copy plus block-wise float work and the MNIST
    reconstruction's float32 arrays)."""
    return decoded_bytes(width, height, mode) + 16 * width * height + (1 << 20)


class DecodeGate:
    """Admit decodes while their estimated memory fits ``budget`` bytes, at most ``slots`` at once.

    A decode that alone is over the budget runs when nothing else does. A caller is answered
    ``ApiError(503, "busy")`` at once when the work already admitted or queued is over
    ``queue_factor`` budgets (a burst of huge uploads: better a quick 503 than a long wait),
    or when ``max_waiting`` callers already wait, and after ``wait_s`` seconds of waiting.
    """

    def __init__(self, budget: int, slots: int, *, max_waiting: int = DEFAULT_MAX_REQUESTS,
                 wait_s: float = BUSY_WAIT_S, queue_factor: int = 4) -> None:
        self.budget, self.slots, self.max_waiting, self.wait_s = budget, max(1, slots), max_waiting, wait_s
        self.max_queued = queue_factor * budget
        self.in_use = self.running = self.waiting = self.queued = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def admit(self, cost: int) -> Iterator[None]:
        with self._cond:
            busy = self.waiting >= self.max_waiting or (self.queued and self.queued + cost > self.max_queued)
            if busy:
                raise ApiError(503, "busy", _("the server is busy decoding other images; try again in a moment"))
            self.waiting += 1
            self.queued += cost
            try:
                ok = self._cond.wait_for(
                    lambda: self.running == 0 or (self.running < self.slots and self.in_use + cost <= self.budget),
                    timeout=self.wait_s)
            finally:
                self.waiting -= 1
            if not ok:
                self.queued -= cost
                raise ApiError(503, "busy", _("the server is busy decoding other images; try again in a moment"))
            self.in_use += cost
            self.running += 1
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= cost
                self.queued -= cost
                self.running -= 1
                self._cond.notify_all()


class ConcurrencyLimitMiddleware:
    """At most ``max_requests`` HTTP requests in flight; the next ones get a JSON 503 at once.

    This replaces uvicorn's ``limit_concurrency``, whose 503 is plain text.
    """

    def __init__(self, app: Any, max_requests: int) -> None:
        self.app, self.max_requests, self.active = app, max_requests, 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_requests:
            await send_json(send, 503, "busy",
                             _("the server is handling {active} requests, its limit; try again in a moment").format(active=self.active),
                             retry_after=1)
            return
        self.active += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


@dataclass(frozen=True)
class ReadLimits:
    """How long a client may take to send a request, and how many connections it may hold open.

    The body rule is Apache's ``mod_reqtimeout`` (``body=20,MinRate=500``): ``body_timeout_s`` to
    send it, extended by one second for every ``min_body_rate`` bytes received, so a slow honest
    upload goes on while a client that trickles bytes is cut off. Header and connection limits are
    enforced by the server's protocol (:mod:`cnnlab.apps.serve.server`), the body ones by
    :class:`BodyLimitMiddleware`.
    """

    header_timeout_s: float = 10.0      # from the connection (or the previous answer) to the end of the headers
    body_timeout_s: float = 20.0        # to send the body, before MinRate extensions
    min_body_rate: int = 500            # bytes/s: each 500 bytes received adds a second
    body_idle_s: float = 10.0           # longest pause between two pieces of a body
    max_connections: int = 256          # open connections; more are answered 503 and closed at once
    keep_alive_s: float = 5.0           # an idle connection between two requests (uvicorn's timeout_keep_alive)
    graceful_shutdown_s: float = 3.0    # on SIGTERM/Ctrl+C, requests in flight get this long (uvicorn's own)
    max_header_bytes: int = 16 * 1024   # request line and headers (h11_max_incomplete_event_size)
    buffer_budget: int = 128 * 2**20    # bytes of request bodies held in memory by all connections together


DEFAULT_READ_LIMITS = ReadLimits()


class BodyLimitMiddleware:
    """Read each request body whole, within its size and time limits, before the app sees the request.

    A declared Content-Length that is malformed is a JSON 400, one above ``max_bytes`` a 413 at once
    (the body is never read); a body that passes the limit while arriving (chunked, or a client that
    lies about its length) is a 413 as soon as it does. A body not sent within the
    :class:`ReadLimits` timeouts is answered 408 and its connection closed. Only a complete request
    reaches the app, so a slow upload never holds one of the app's ``max_requests`` slots (as a
    reverse proxy that buffers bodies, like nginx, protects its backend). Bodies held by all
    connections together stay under ``limits.buffer_budget`` (503 beyond it).
    """

    def __init__(self, app: Any, max_bytes: int, limits: ReadLimits = DEFAULT_READ_LIMITS) -> None:
        self.app, self.max_bytes, self.limits = app, max_bytes, limits
        self.buffered = 0  # one event loop: no lock needed

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        declared = [v for k, v in headers if k == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
                if length < 0 or len(set(declared)) > 1:
                    raise ValueError
            except ValueError:
                await send_json(send, 400, "bad_request", _("invalid Content-Length header"))
                return
            if length > self.max_bytes:
                await send_json(send, 413, "too_large", self._message(length))
                return
        body = bytearray()
        try:
            try:
                await self._read(receive, body)
            except BodyTooLarge as exc:
                await send_json(send, 413, "too_large", str(exc))
                return
            except BodyTimeout as exc:
                await send_json(send, 408, "timeout", str(exc))
                return
            except BufferFull:
                await send_json(send, 503, "busy", _("the server holds too many uploads in memory; try again in a moment"), retry_after=1)
                return
            except Disconnected:
                return
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()  # after the body: only http.disconnect comes

            await self.app(scope, replay, send)
        finally:
            self.buffered -= len(body)

    async def _read(self, receive: Callable, body: bytearray) -> None:
        lim = self.limits
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            deadline = start + lim.body_timeout_s + len(body) / lim.min_body_rate
            wait = min(lim.body_idle_s, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except asyncio.TimeoutError:
                raise BodyTimeout(_("the request body was not sent in time ({received:,} bytes received in {seconds:.0f} s; a body "
                                    "must keep coming at {min_body_rate} bytes/s or more)").format(received=len(body), seconds=loop.time() - start, min_body_rate=lim.min_body_rate)) from None
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            if len(body) + len(chunk) > self.max_bytes:
                raise BodyTooLarge(self._message(None))
            if self.buffered + len(chunk) > lim.buffer_budget:
                raise BufferFull
            body += chunk
            self.buffered += len(chunk)
            if not message.get("more_body", False):
                return

    def _message(self, length: int | None) -> str:
        if length is None:
            return _("the request body is larger than this server's limit of {limit}").format(
                limit=human_bytes(self.max_bytes))
        return _("the request body {size} is larger than this server's limit of {limit}").format(
            size=human_bytes(length), limit=human_bytes(self.max_bytes))


async def send_json(send: Callable, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
    body = json.dumps({"error": code, "detail": detail}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
