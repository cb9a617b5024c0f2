"""``cnnlab serve``: a local web page that classifies what you draw, and a small JSON API.

    GET  /               the drawing page (canvas, clear, upload, live top-k bars, the 28x28 input)
    POST /api/predict    an image (raw body or multipart ``file``) -> top-k labels + the input it saw
    GET  /api/model      what the model is and how it preprocesses images
    GET  /docs, /openapi.json

Every image goes through :mod:`cnnlab.predict`, so it is preprocessed exactly as
``cnnlab predict`` does, with the spec stored in the checkpoint.

Safe by default: it binds to 127.0.0.1; a request body larger than ``max_bytes``
is refused from its Content-Length header before anything is read, and a body
without one (chunked) is cut off as soon as it passes the limit; images with
more than ``max_pixels`` pixels are refused before they are decoded; every
refusal is a 4xx JSON error and the server keeps serving. Request bodies are
kept in memory; the only exception is Starlette's multipart parser, which
spools an uploaded part above 1 MiB to an anonymous temporary file in the
system temp folder that is deleted when the request ends.

FastAPI, uvicorn and python-multipart come with the ``serve`` extra:
``pip install -e ".[serve]"``.
"""

import base64
import contextlib
import dataclasses
import io
import ipaddress
import os
import socket
import threading
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from cnnlab import __version__
from cnnlab.apps.predict import load
from cnnlab.core.errors import CnnlabError, ImageError
from cnnlab.core.runs import RunDir
from cnnlab.data.images import decode_image, tensor_to_image

DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # a phone photo of a digit fits; a canvas PNG is ~10 KB
DEFAULT_MAX_PIXELS = 25_000_000  # 5000 x 5000: refuse decompression bombs before decoding
# Decoded size in memory (PIL keeps multi-band pixels in 4 bytes): 25 megapixels of RGBA fit.
DEFAULT_MAX_DECODED_BYTES = 100 * 2**20
# Memory that concurrent decodes may use together (estimated, see _decode_cost). A request over
# it alone still runs, alone: a worst-case 25-megapixel upload costs ~500 MB, so those go one at a
# time while small drawings (~2 MB each) run side by side, one per core (issue 16, benchmarks/serve_memory.py).
DEFAULT_DECODE_MEMORY = 512 * 2**20
# In-flight requests beyond this are answered 503 at once (JSON); uploads waiting for the decode
# budget longer than BUSY_WAIT_S get 503 too, so a burst cannot queue work without end.
DEFAULT_MAX_REQUESTS = 64
BUSY_WAIT_S = 60.0
DEFAULT_TOP_K = 3

# Content types accepted as a raw image body; anything else (text, JSON, forms) gets 415.
_RAW_TYPES = ("image/", "application/octet-stream")
# The page's own files; served from memory by name, so no request path ever reaches the file system.
_WEB_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
              "style.css": "text/css; charset=utf-8"}
# The page needs nothing from other origins; the API docs (/docs) keep FastAPI's defaults.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _require_web_stack() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        try:
            import python_multipart  # noqa: F401  (python-multipart >= 0.0.13)
        except ImportError:
            import multipart  # noqa: F401  (older python-multipart)
    except ImportError as exc:
        raise CnnlabError(
            f"cnnlab serve needs FastAPI, uvicorn and python-multipart ({exc.name} is missing); "
            "install them with: pip install 'cnnlab[serve]'  (or pip install -e \".[serve]\" in a checkout)"
        ) from None


class ApiError(Exception):
    """A refused request: becomes ``{"error": code, "detail": detail}`` with ``status``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class BodyTooLarge(Exception):
    """Raised from ``receive`` the moment a body passes the limit."""


def _human_bytes(n: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def _decoded_bytes(width: int, height: int, mode: str) -> int:
    """Bytes PIL holds for the decoded image: 1 per pixel for 1/L/P, 2 for 16-bit grey, else 4."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return width * height * per_pixel


def _decode_cost(width: int, height: int, mode: str) -> int:
    """Estimated peak memory of decoding and preprocessing one image (measured: ~21 bytes/pixel
    for a 25-megapixel RGBA PNG, its decoded copy plus block-wise float work and the MNIST
    reconstruction's float32 arrays)."""
    return _decoded_bytes(width, height, mode) + 16 * width * height + (1 << 20)


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
                raise ApiError(503, "busy", "the server is busy decoding other images; try again in a moment")
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
                raise ApiError(503, "busy", "the server is busy decoding other images; try again in a moment")
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
            await _send_json(send, 503, "busy",
                             f"the server is handling {self.active} requests, its limit; try again in a moment",
                             retry_after=1)
            return
        self.active += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class BodyLimitMiddleware:
    """Refuse request bodies above ``max_bytes`` without reading them whole.

    A declared Content-Length above the limit is answered with 413 at once; the
    body is never read. Otherwise ``receive`` counts bytes as they arrive and
    raises :class:`BodyTooLarge` as soon as the count passes the limit (chunked
    uploads, or a client that lies about its length).
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_json(send, 400, "bad_request", "invalid Content-Length header")
                return
            if length > self.max_bytes:
                await _send_json(send, 413, "too_large", self._message(length))
                return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self._message(None))
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            # Normally the endpoint turns this into a 413 itself; this is the fallback.
            if started:
                raise
            await _send_json(send, 413, "too_large", str(exc))

    def _message(self, length: int | None) -> str:
        size = f"{_human_bytes(length)} " if length is not None else ""
        return f"the request body {size}is larger than this server's limit of {_human_bytes(self.max_bytes)}"


async def _send_json(send: Callable, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
    import json

    body = json.dumps({"error": code, "detail": detail}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _jsonable(value: Any) -> Any:
    """Plain JSON values from whatever a predictor exposes (dicts, dataclasses, tensors, paths)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        return _jsonable(value.tolist())
    return str(value)


def input_png(tensor: Any, spec: Any = None) -> str:
    """The preprocessed (C, H, W) tensor the network saw, as a ``data:image/png;base64`` URL.

    :func:`cnnlab.preprocess.tensor_to_image` undoes the stored normalisation (as
    ``cnnlab predict --save-preprocessed`` does), so the picture shows the
    network's input on the 0..255 scale: white ink on black for MNIST.
    """

    img = tensor_to_image(tensor, spec if isinstance(spec, dict) else None)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _describe_model(predictor: Any, source: Any) -> dict:
    """The predictor's model entry, plus its size and the run's test accuracy when known."""
    import json

    info = _jsonable(dict(getattr(predictor, "model_info", {}) or {}))
    if info.get("checkpoint"):
        # The page needs the file's name, not where it lives on the server's disk.
        info["checkpoint"] = Path(str(info["checkpoint"])).name
    model = getattr(predictor, "model", None)
    if model is not None:
        info["parameters"] = sum(p.numel() for p in model.parameters())
    if isinstance(source, (str, os.PathLike)):
        report = RunDir(Path(source)).report_json
        try:
            info["test_accuracy"] = float(json.loads(report.read_text())["accuracy"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a bare checkpoint, or a run without a test report
    return info


def _web_file(name: str) -> bytes:
    return resources.files("cnnlab").joinpath("web", name).read_bytes()


_PREDICT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An image (PNG, JPEG, ...): either the raw bytes with an image/* or "
                       "application/octet-stream Content-Type, or a multipart/form-data upload "
                       "in a field named `file`.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def create_app(
    source: Any,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    default_top_k: int = DEFAULT_TOP_K,
    device: str = "auto",
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    decode_memory: int = DEFAULT_DECODE_MEMORY,
    decode_slots: int | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
) -> Any:
    """The FastAPI app for a run directory (or checkpoint path, or an already loaded Predictor).

    Memory is bounded: an image over ``max_pixels`` or ``max_decoded_bytes`` is refused from its
    header (413); decodes run while their estimated memory fits ``decode_memory``, at most
    ``decode_slots`` at once (default: one per core); more than ``max_requests`` requests in flight,
    or an upload kept waiting for the decode budget, get a JSON 503 ``busy``.
    """
    _require_web_stack()
    from fastapi import FastAPI

    if max_bytes < 1:
        raise CnnlabError(f"the request size limit must be at least 1 byte, got {max_bytes}")
    predictor = load(source, device=device) if isinstance(source, (str, os.PathLike)) else source
    classes = [str(c) for c in predictor.classes]
    default_top_k = max(1, min(default_top_k, len(classes)))
    model_info = {
        "model": _describe_model(predictor, source),
        "classes": classes,
        "preprocess": _jsonable(getattr(predictor, "spec", {})),
        "default_top_k": default_top_k,
        "max_bytes": max_bytes,
        "max_pixels": max_pixels,
        "max_decoded_bytes": max_decoded_bytes,
        "cnnlab_version": __version__,
    }
    classify = Classifier(predictor, DecodeGate(decode_memory, decode_slots or os.cpu_count() or 1),
                          max_pixels=max_pixels, max_decoded_bytes=max_decoded_bytes)

    app = FastAPI(
        title="cnnlab serve",
        version=__version__,
        description="Classify an image with a trained cnnlab model. The page at `/` lets you draw one.",
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes)
    app.add_middleware(ConcurrencyLimitMiddleware, max_requests=max_requests)  # outermost: refuses first
    _add_error_handlers(app)
    _add_page_routes(app)
    _add_api_routes(app, model_info, classify, default_top_k, len(classes))
    return app


def _add_error_handlers(app: Any) -> None:
    """Every error is one JSON object ``{"error": code, "detail": sentence}``."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": "invalid_request", "detail": f"{where}: {first.get('msg', 'invalid value')}"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a bad request: Starlette re-raises after this answer, so the server logs the traceback.
        return JSONResponse({"error": "internal", "detail": "internal server error; see the server log"},
                            status_code=500)


def _add_page_routes(app: Any) -> None:
    """The drawing page and its static files, read once from the package."""
    from fastapi.responses import Response

    pages = {name: _web_file(name) for name in _WEB_FILES}

    def page(name: str) -> Response:
        return Response(pages[name], media_type=_WEB_FILES[name], headers=_PAGE_HEADERS)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return page("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in pages or name == "index.html":
            raise ApiError(404, "not_found", f"no such file: {name}")
        return page(name)


def _response_models() -> tuple[Any, Any]:
    """The JSON schemas of a prediction and of an error, for the OpenAPI page (pydantic is optional)."""
    from pydantic import BaseModel, Field

    class Candidate(BaseModel):
        label: str = Field(description="class name")
        index: int = Field(description="class index in the model's output")
        prob: float = Field(description="softmax probability")

    class PredictResponse(BaseModel):
        label: str = Field(description="the most probable class")
        prob: float = Field(description="its probability")
        top_k: list[Candidate] = Field(description="the k most probable classes, best first")
        input_png: str = Field(description="the preprocessed image the network saw, as a data:image/png;base64 URL")
        input_shape: list[int] = Field(description="its shape (C, H, W)")
        source_size: list[int] = Field(description="the uploaded image's width and height")

    class ErrorResponse(BaseModel):
        error: str = Field(description="a short code: too_large, too_many_pixels, unsupported_type, not_an_image, unusable_image, ...")
        detail: str = Field(description="what was wrong, in one sentence")

    return PredictResponse, ErrorResponse


def _add_api_routes(app: Any, model_info: dict, classify: "Classifier", default_top_k: int, num_classes: int) -> None:
    from fastapi import Query, Request
    from starlette.concurrency import run_in_threadpool

    predict_response, error_response = _response_models()
    errors = {code: {"model": error_response} for code in (400, 413, 415, 422, 503)}

    @app.get("/api/model", summary="Model information")
    def get_model() -> dict:
        """The model, its classes and the preprocessing stored with it, plus this server's limits."""
        return model_info

    @app.post(
        "/api/predict",
        summary="Classify an image",
        response_model=predict_response,
        responses=errors,
        openapi_extra=_PREDICT_BODY_DOC,
    )
    async def predict_endpoint(
        request: Request,
        top_k: int = Query(default_top_k, ge=1, le=num_classes, description="how many classes to return"),
    ) -> dict:
        """Classify one image, preprocessed exactly as `cnnlab predict` does."""
        data = await read_image_bytes(request)
        # Decoding and the forward pass are CPU work: keep them off the event loop.
        return await run_in_threadpool(classify, data, top_k)


async def read_image_bytes(request: Any) -> bytes:
    """The uploaded image: a multipart field named ``file``, or the raw body of an image/* request."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=10)
            except StarletteHTTPException as exc:
                raise ApiError(400, "bad_multipart", f"could not read the multipart upload: {exc.detail}") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "no_file", "the multipart upload has no file in a field named 'file'")
            try:
                return await upload.read()
            finally:
                await form.close()  # deletes a spooled temporary file at once
        if ctype.startswith(_RAW_TYPES):
            chunks = [chunk async for chunk in request.stream()]
            return b"".join(chunks)
    except BodyTooLarge as exc:
        raise ApiError(413, "too_large", str(exc)) from None
    shown = ctype or "none"
    raise ApiError(415, "unsupported_type",
                   f"Content-Type {shown} is not accepted; send an image (image/png, image/jpeg, ... or "
                   "application/octet-stream) as the body, or as multipart/form-data in a field named 'file'")


class Classifier:
    """Image bytes in, the JSON answer out: size checks from the header, decoding under the memory gate,
    one forward pass at a time."""

    def __init__(self, predictor: Any, gate: DecodeGate, *, max_pixels: int, max_decoded_bytes: int) -> None:
        self.predictor = predictor
        self.gate = gate
        self.max_pixels = max_pixels
        self.max_decoded_bytes = max_decoded_bytes
        # One forward pass at a time: the model is shared and LeNet inference takes about a millisecond.
        self.model_lock = threading.Lock()

    def _probe(self, data: bytes) -> tuple[int, int, str]:
        """Width, height and mode from the header alone, so a decompression bomb is refused before decoding."""
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as probe:
                    return probe.size[0], probe.size[1], probe.mode
        except Image.DecompressionBombError:
            raise ApiError(413, "too_many_pixels", f"the image has more than {self.max_pixels:,} pixels") from None
        except Image.UnidentifiedImageError:
            raise ApiError(400, "not_an_image", "not an image: no image format recognises these bytes") from None
        except Exception:
            return 0, 0, "L"  # a broken header: decode_image gives the reason

    def __call__(self, data: bytes, top_k: int) -> dict:
        from PIL import Image

        if not data:
            raise ApiError(400, "empty", "the request holds no image (empty body)")
        width, height, mode = self._probe(data)
        if width * height > self.max_pixels:
            raise ApiError(413, "too_many_pixels",
                           f"the image is {width}x{height} = {width * height:,} pixels; "
                           f"this server accepts at most {self.max_pixels:,}")
        decoded = _decoded_bytes(width, height, mode)
        if decoded > self.max_decoded_bytes:
            raise ApiError(413, "too_large_decoded",
                           f"the image is {width}x{height} {mode}, {_human_bytes(decoded)} once decoded; "
                           f"this server decodes at most {_human_bytes(self.max_decoded_bytes)} per image")
        # Decoding and preprocessing a large image costs ~20 bytes a pixel: admitted only while that fits.
        with self.gate.admit(_decode_cost(width, height, mode)):
            try:
                img = decode_image(data)
            except ImageError as exc:
                raise ApiError(400, "not_an_image", str(exc)) from None
            except Image.DecompressionBombError:
                raise ApiError(413, "too_many_pixels", f"the image has more than {self.max_pixels:,} pixels") from None
            try:
                with self.model_lock:
                    pred = self.predictor.predict([img], top_k=top_k)[0]
            except ImageError as exc:  # decoded, but nothing to classify (a blank canvas, a flat photo)
                raise ApiError(400, "unusable_image", str(exc)) from None
            source_size = [int(img.width), int(img.height)]
            del img  # the decoded picture is not needed for the answer: free it inside the gate
        top = [{"label": str(lab), "index": int(i), "prob": float(p)}
               for lab, i, p in zip(pred.labels, pred.indices, pred.probs)]
        return {
            "label": top[0]["label"],
            "prob": top[0]["prob"],
            "top_k": top,
            "input_png": input_png(pred.input, getattr(self.predictor, "spec", None)),
            "input_shape": [int(s) for s in pred.input.shape],
            "source_size": source_size,
        }


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
    _require_web_stack()
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
