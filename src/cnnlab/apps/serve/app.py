"""The server's FastAPI app: error handlers, the drawing page, the JSON API and the :class:`Classifier`.

Every image goes through :class:`cnnlab.service.predictor.Predictor`, so it is preprocessed exactly
as ``cnnlab predict`` does, with the spec stored in the checkpoint. The limits it applies live in
:mod:`cnnlab.apps.serve.limits`; running it, in :mod:`cnnlab.apps.serve.server`.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations (Request, Query) at runtime.
import base64
import dataclasses
import io
import json
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import torch

from cnnlab import __version__
from cnnlab.analysis.explain import Explanation, explain
from cnnlab.core.errors import CnnlabError, ImageError
from cnnlab.core.i18n import _, check_language, chosen_language, from_environment, use_language
from cnnlab.core.i18n_page import negotiate, translate_page
from cnnlab.core.runs import RunDir, read_run_file
from cnnlab.core.runtime import available_cores
from cnnlab.data.images import decode_image, image_header, tensor_to_image
from cnnlab.service.predictor import Predictor, load
from cnnlab.apps.serve.limits import (
    DEFAULT_DECODE_MEMORY,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_READ_LIMITS,
    DEFAULT_TOP_K,
    ApiError,
    BodyLimitMiddleware,
    BodyTooLarge,
    ConcurrencyLimitMiddleware,
    DecodeGate,
    ReadLimits,
    decode_cost,
    decoded_bytes,
    human_bytes,
)

# Content types accepted as a raw image body; anything else (text, JSON, forms) gets 415.
_RAW_TYPES = ("image/", "application/octet-stream")
# The page's own files; served from memory by name, so no request path ever reaches the file system.
_WEB_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
              "inside.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# The page needs nothing from other origins; the API docs (/docs) keep FastAPI's defaults.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def require_web_stack() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        try:
            import python_multipart  # noqa: F401  (python-multipart >= 0.0.13)
        except ImportError:
            import multipart  # noqa: F401  (older python-multipart)
    except ImportError as exc:
        raise CnnlabError(
            _("cnnlab serve needs FastAPI, uvicorn and python-multipart ({name} is missing); install "
              "them with: pip install 'cnnlab[serve]'  (or pip install -e \".[serve]\" in a checkout)").format(name=exc.name)
        ) from None


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


def input_png(tensor: torch.Tensor, spec: dict | None = None) -> str:
    """The preprocessed (C, H, W) tensor the network saw, as a ``data:image/png;base64`` URL.

    :func:`cnnlab.data.images.tensor_to_image` undoes the stored normalisation (as
    ``cnnlab predict --save-preprocessed`` does), so the picture shows the
    network's input on the 0..255 scale: white ink on black for MNIST.
    """

    img = tensor_to_image(tensor, spec)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _describe_model(predictor: Predictor, source: Any) -> dict:
    """The predictor's model entry, plus its size and the run's test accuracy when known."""
    info = _jsonable(dict(predictor.model_info or {}))
    if info.get("checkpoint"):
        # The page needs the file's name, not where it lives on the server's disk.
        info["checkpoint"] = Path(str(info["checkpoint"])).name
    info["parameters"] = sum(p.numel() for p in predictor.model.parameters())
    if isinstance(source, (str, os.PathLike)):
        report = RunDir(Path(source)).report_json
        try:
            info["test_accuracy"] = float(json.loads(read_run_file(report))["accuracy"])
        except (OSError, CnnlabError, ValueError, KeyError, TypeError):
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
    source: str | os.PathLike | Predictor,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    default_top_k: int = DEFAULT_TOP_K,
    device: str = "auto",
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    decode_memory: int = DEFAULT_DECODE_MEMORY,
    decode_slots: int | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    read_limits: ReadLimits = DEFAULT_READ_LIMITS,
    lang: str | None = None,
) -> Any:
    """The FastAPI app for a run directory (or checkpoint path, or an already loaded Predictor).

    Memory is bounded: an image over ``max_pixels`` or ``max_decoded_bytes`` is refused from its
    header (413); decodes run while their estimated memory fits ``decode_memory``, at most
    ``decode_slots`` at once (default: one per core); more than ``max_requests`` requests in flight,
    or an upload kept waiting for the decode budget, get a JSON 503 ``busy``. A body not sent within
    ``read_limits`` is a 408 (docs/serve.md, "Limits").

    The page speaks ``?lang=`` when a request names one, else ``lang`` (default: ``cnnlab --lang``,
    ``CNNLAB_LANG``), else the browser's ``Accept-Language``, else the server's locale, else English.
    """
    require_web_stack()
    from fastapi import FastAPI

    if max_bytes < 1:
        raise CnnlabError(_("the request size limit must be at least 1 byte, got {max_bytes}").format(max_bytes=max_bytes))
    predictor = load(source, device=device) if isinstance(source, (str, os.PathLike)) else source
    classes = [str(c) for c in predictor.classes]
    default_top_k = max(1, min(default_top_k, len(classes)))
    model_info = {
        "model": _describe_model(predictor, source),
        "classes": classes,
        "preprocess": _jsonable(predictor.spec),
        "default_top_k": default_top_k,
        "max_bytes": max_bytes,
        "max_pixels": max_pixels,
        "max_decoded_bytes": max_decoded_bytes,
        "cnnlab_version": __version__,
    }
    classify = Classifier(predictor, DecodeGate(decode_memory, decode_slots or available_cores()),
                          max_pixels=max_pixels, max_decoded_bytes=max_decoded_bytes)

    app = FastAPI(
        title="cnnlab serve",
        version=__version__,
        description="Classify an image with a trained cnnlab model. The page at `/` lets you draw one.",
    )
    # The last added is outermost: a body is read whole (within its size and time limits) before the
    # request counts against max_requests, so slow uploads cannot take the slots of finished ones.
    app.add_middleware(ConcurrencyLimitMiddleware, max_requests=max_requests)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes, limits=read_limits)
    server_lang = check_language(lang) if lang is not None else chosen_language()
    # Outermost: the limits' own JSON answers and every error detail speak the request's language.
    app.add_middleware(LanguageMiddleware, server_lang=server_lang, fallback_lang=from_environment())
    _add_error_handlers(app)
    _add_page_routes(app, server_lang, from_environment())
    _add_api_routes(app, model_info, classify, default_top_k, len(classes))
    return app


class LanguageMiddleware:
    """Each request runs in its language, chosen as the page's is (``?lang=``, the server's own setting,
    ``Accept-Language``, the server's locale): the JSON ``detail`` of an error is written in it.

    A pure ASGI middleware: the :func:`use_language` context holds for everything below it in this
    request's task, and Starlette copies it into the threads that run sync endpoints."""

    def __init__(self, app: Any, server_lang: str | None, fallback_lang: str) -> None:
        self.app, self.server_lang, self.fallback_lang = app, server_lang, fallback_lang

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("lang", [None])[0]
        accept = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"accept-language"), None)
        with use_language(negotiate(asked, accept, self.server_lang, self.fallback_lang)):
            await self.app(scope, receive, send)


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

    @app.exception_handler(CnnlabError)
    async def _library_error(request: Request, exc: CnnlabError) -> JSONResponse:
        # The server's hint is data: the setting concerned, as the library names it, in "option".
        body = {"error": "invalid_request", "detail": str(exc)}
        if exc.option:
            body["option"] = exc.option
        return JSONResponse(body, status_code=400)

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
        return JSONResponse({"error": "internal", "detail": _("internal server error; see the server log")},
                            status_code=500)


def _add_page_routes(app: Any, server_lang: str | None, fallback_lang: str) -> None:
    """The drawing page and its static files, read once from the package; the page once per language."""
    from fastapi import Query, Request
    from fastapi.responses import Response

    pages = {name: _web_file(name) for name in _WEB_FILES}
    scripts = [data for name, data in pages.items() if name.endswith(".js")]
    translated: dict[str, bytes] = {}

    def page(name: str) -> Response:
        return Response(pages[name], media_type=_WEB_FILES[name], headers=_PAGE_HEADERS)

    @app.get("/", include_in_schema=False)
    def index(request: Request, lang: str | None = Query(None, max_length=35)) -> Response:
        chosen = negotiate(lang, request.headers.get("accept-language"), server_lang, fallback_lang)
        if chosen not in translated:  # a dict write of the same bytes: no lock needed
            translated[chosen] = translate_page(pages["index.html"].decode("utf-8"), scripts, chosen).encode("utf-8")
        return Response(translated[chosen], media_type=_WEB_FILES["index.html"],
                        headers={**_PAGE_HEADERS, "Content-Language": chosen, "Vary": "Accept-Language"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in pages or name == "index.html":
            raise ApiError(404, "not_found", _("no such file: {name}").format(name=name))
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

    @app.post(
        "/api/explain",
        summary="See inside the network for an image",
        responses=errors,
        openapi_extra=_PREDICT_BODY_DOC,
    )
    async def explain_endpoint(
        request: Request,
        top_k: int = Query(default_top_k, ge=1, le=num_classes, description="how many classes to return"),
    ) -> dict:
        """The upload of /api/predict, answered with its prediction plus every conv and pool layer's feature maps,
        the conv layers' kernels and inputs (for the arithmetic at any position) and the attribution map
        (Integrated Gradients for the predicted class). Arrays are `{"shape", "f32"}`: base64 of little-endian
        float32, row-major."""
        data = await read_image_bytes(request)
        return await run_in_threadpool(classify.explain, data, top_k)


async def read_image_bytes(request: Any) -> bytes:
    """The uploaded image: a multipart field named ``file``, or the raw body of an image/* request."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=10)
            except StarletteHTTPException as exc:
                raise ApiError(400, "bad_multipart", _("could not read the multipart upload: {detail}").format(detail=exc.detail)) from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "no_file", _("the multipart upload has no file in a field named 'file'"))
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
                   _("Content-Type {shown} is not accepted; send an image (image/png, image/jpeg, ... or "
                     "application/octet-stream) as the body, or as multipart/form-data in a field named 'file'").format(shown=shown))


class Classifier:
    """Image bytes in, the JSON answer out: size checks from the header, decoding under the memory gate,
    one forward pass at a time."""

    def __init__(self, predictor: Predictor, gate: DecodeGate, *, max_pixels: int, max_decoded_bytes: int) -> None:
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
            header = image_header(data)
        except Image.DecompressionBombError:
            raise ApiError(413, "too_many_pixels", _("the image has more than {max_pixels:,} pixels").format(max_pixels=self.max_pixels)) from None
        if header is None:
            raise ApiError(400, "not_an_image", _("not an image: no image format recognises these bytes"))
        return header

    def _checked(self, data: bytes) -> tuple[int, int, str]:
        """The image's header, or the ApiError that refuses it before any decoding."""
        if not data:
            raise ApiError(400, "empty", _("the request holds no image (empty body)"))
        width, height, mode = self._probe(data)
        if width * height > self.max_pixels:
            raise ApiError(413, "too_many_pixels",
                           _("the image is {width}x{height} = {pixels:,} pixels; this server accepts at most {max_pixels:,}").format(width=width, height=height, pixels=width * height, max_pixels=self.max_pixels))
        decoded = decoded_bytes(width, height, mode)
        if decoded > self.max_decoded_bytes:
            raise ApiError(413, "too_large_decoded",
                           _("the image is {width}x{height} {mode}, {size} once decoded; this server decodes at most "
                             "{limit} per image").format(width=width, height=height, mode=mode, size=human_bytes(decoded), limit=human_bytes(self.max_decoded_bytes)))
        return width, height, mode

    def _decode(self, data: bytes) -> Any:
        from PIL import Image

        try:
            return decode_image(data, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise ApiError(400, "not_an_image", str(exc)) from None
        except Image.DecompressionBombError:
            raise ApiError(413, "too_many_pixels", _("the image has more than {max_pixels:,} pixels").format(max_pixels=self.max_pixels)) from None

    def __call__(self, data: bytes, top_k: int) -> dict:
        width, height, mode = self._checked(data)
        # Decoding and preprocessing a large image costs ~20 bytes a pixel: admitted only while that fits.
        with self.gate.admit(decode_cost(width, height, mode)):
            img = self._decode(data)
            try:
                with self.model_lock:
                    pred = self.predictor.predict([img], top_k=top_k)[0]
            except ImageError as exc:  # decoded, but nothing to classify (a blank canvas, a flat photo)
                raise ApiError(400, "unusable_image", str(exc)) from None
            source_size = [int(img.width), int(img.height)]
            del img  # the decoded picture is not needed for the answer: free it inside the gate
        top = pred.top_k()
        return {
            "label": top[0]["label"],
            "prob": top[0]["prob"],
            "top_k": top,
            "input_png": input_png(pred.input, self.predictor.spec),
            "input_shape": [int(s) for s in pred.input.shape],
            "source_size": source_size,
        }

    def explain(self, data: bytes, top_k: int) -> dict:
        """The same checks and gate as a prediction, then :func:`cnnlab.explain`: the answer of /api/explain."""
        width, height, mode = self._checked(data)
        with self.gate.admit(decode_cost(width, height, mode)):
            img = self._decode(data)
            try:
                x = self.predictor.to_input(img)
            except ImageError as exc:
                raise ApiError(400, "unusable_image", str(exc)) from None
            source_size = [int(img.width), int(img.height)]
            del img
            with self.model_lock:
                ex = explain(self.predictor.model, x.to(self.predictor.device), classes=self.predictor.classes)
        answer = explanation_json(ex, top_k)
        answer.update(input_png=input_png(ex.input, self.predictor.spec), input_shape=[int(s) for s in ex.input.shape],
                      source_size=source_size)
        return answer


# What /api/explain sends at most: feature-map values and kernel weights, all layers together. LeNet-5
# sends ~8,000 and ~2,600; a large model's later layers are left out (the answer says which) rather
# than making every drawing stroke move megabytes.
MAX_EXPLAIN_VALUES = 400_000


def _f32(t: torch.Tensor) -> str:
    """A tensor's values as base64 of little-endian float32, row-major (JavaScript: new Float32Array)."""
    return base64.b64encode(np.ascontiguousarray(t.detach().cpu().numpy(), dtype="<f4").tobytes()).decode("ascii")


def explanation_json(ex: Explanation, top_k: int) -> dict:
    """An explanation as JSON: top-k, every conv/pool layer's maps with, for 2-D convs, the layer's input and
    kernels (so the page can show the arithmetic at any position), and the attribution.

    Arrays are ``{"shape": [...], "f32": base64}``: exact values (the page's arithmetic adds up to
    what the layer computed), and encoding them costs microseconds, not the milliseconds of PNGs.
    """
    probs = ex.probabilities
    order = torch.argsort(probs, descending=True)[:top_k]
    top = [{"label": ex.classes[int(i)], "index": int(i), "prob": float(probs[i])} for i in order]
    budget = MAX_EXPLAIN_VALUES
    layers, left_out = [], []
    for name, maps in ex.maps().items():
        module = ex.modules[name.split(":")[0]]
        entry: dict[str, Any] = {"name": name, "kind": ex.kinds[name], "type": type(module).__name__,
                                 "shape": list(maps.shape), "maps": _f32(maps),
                                 "min": float(maps.min()), "max": float(maps.max())}
        cost = maps.numel()
        conv = isinstance(module, torch.nn.Conv2d) and module.groups == 1 and name in ex.layer_inputs
        if conv:
            x = ex.layer_inputs[name]
            # "same"/"valid" padding as numbers: the top-left input position under output (0, 0), negated.
            ph, pw = (module.padding if not isinstance(module.padding, str)
                      else [-v for v in ex.kernel(name, 0, (0, 0))["input_origin"]])
            entry["conv"] = {
                "input": {"shape": list(x.shape), "f32": _f32(x)},
                "weight": {"shape": list(module.weight.shape), "f32": _f32(module.weight)},
                "bias": [float(b) for b in module.bias.detach()] if module.bias is not None else None,
                "stride": list(module.stride), "padding": [ph, pw], "dilation": list(module.dilation),
            }
            cost += x.numel() + module.weight.numel()
        elif ex.kinds[name] == "pool":
            entry["pool"] = {k: _jsonable(getattr(module, k, None)) for k in ("kernel_size", "stride", "padding")}
        if cost > budget:
            left_out.append(name)
            continue
        budget -= cost
        layers.append(entry)
    a = ex.attribution
    return {
        "label": top[0]["label"],
        "prob": top[0]["prob"],
        "top_k": top,
        "layers": layers,
        "left_out": left_out,
        "attribution": {"method": ex.method, "target": ex.classes[ex.target], "shape": list(a.shape),
                        "f32": _f32(a), "max_abs": float(a.abs().max())},
    }
