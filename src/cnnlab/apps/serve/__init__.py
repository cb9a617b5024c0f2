"""``cnnlab serve``: a local web page that classifies what you draw, and a small JSON API.

    GET  /               the drawing page (canvas, clear, upload, live top-k bars, the 28x28 input)
    POST /api/predict    an image (raw body or multipart ``file``) -> top-k labels + the input it saw
    GET  /api/model      what the model is and how it preprocesses images
    GET  /docs, /openapi.json

Every image goes through :class:`cnnlab.service.predictor.Predictor`, so it is preprocessed exactly
as ``cnnlab predict`` does, with the spec stored in the checkpoint.

The package: :mod:`~cnnlab.apps.serve.app` (the FastAPI app: handlers, routes, schemas, the
classifier), :mod:`~cnnlab.apps.serve.limits` (body and request limits, the decode memory gate),
:mod:`~cnnlab.apps.serve.server` (socket, uvicorn, :class:`BackgroundServer`, :func:`serve`).

Safe by default: it binds to 127.0.0.1; a request body larger than ``max_bytes``
is refused from its Content-Length header before anything is read, and a body
without one (chunked) is cut off as soon as it passes the limit; images with
more than ``max_pixels`` pixels are refused before they are decoded; every
refusal is a 4xx JSON error and the server keeps serving. Request bodies are
read whole, within time limits, before a request counts as in flight, and kept
in memory (128 MiB for all connections together); Starlette's multipart parser
may also spool an uploaded part above 1 MiB to an anonymous temporary file,
deleted when the request ends. Headers have a deadline and open connections a
cap (docs/serve.md, "Limits").

FastAPI, uvicorn and python-multipart come with the ``serve`` extra:
``pip install -e ".[serve]"``.
"""
from cnnlab.apps.serve.app import Classifier, create_app, input_png, read_image_bytes, require_web_stack
from cnnlab.apps.serve.limits import (
    DEFAULT_DECODE_MEMORY,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_READ_LIMITS,
    ApiError,
    BodyLimitMiddleware,
    ConcurrencyLimitMiddleware,
    DecodeGate,
    ReadLimits,
)
from cnnlab.apps.serve.server import BackgroundServer, bind_socket, is_loopback, make_server, serve

__all__ = [
    "DEFAULT_DECODE_MEMORY", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_DECODED_BYTES", "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_REQUESTS", "DEFAULT_READ_LIMITS", "ApiError", "BackgroundServer", "BodyLimitMiddleware", "Classifier",
    "ConcurrencyLimitMiddleware", "DecodeGate", "bind_socket", "create_app", "input_png", "is_loopback",
    "ReadLimits", "make_server", "read_image_bytes", "require_web_stack", "serve",
]
