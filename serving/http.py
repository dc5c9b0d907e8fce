"""What both shoprec servers add to KServe's ModelServer, as one ASGI middleware (`RequestGuard`)
and handlers installed before the server starts:

- A body is capped (`--max_body_bytes`, default `MAX_BODY_BYTES`): 413 from Content-Length
  before a byte is read, or as soon as a chunked body passes the cap.
- A body that parses as JSON is JSON whatever its Content-Type says: `curl -d` sends
  application/x-www-form-urlencoded, and a stock Open Inference Protocol client (tritonclient)
  sends a pure-JSON V2 body without a JSON Content-Type; KServe 0.21 takes both for raw bytes
  (V1: "not JSON"; V2: "the inference-header-content-length header is missing"). A body that
  is not JSON gets a clear 400; V2 binary bodies (with Inference-Header-Content-Length) pass.
- A V2 body that does not fit the Open Inference Protocol schema is a 400 naming the field (not
  FastAPI's 422).
- No answer leaks internals: an unexpected exception is a 500 with a fixed message and the
  request id (the traceback goes to the log); `ServingUnavailable` (a misconfigured or busy
  server) is a 503 with its own message; every error message is bounded.

(uvicorn handles SIGTERM: it stops accepting, lets requests in flight finish within the grace
period, then the server unloads its models and exits 0.)"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.model_server import app
from kserve.protocol.dataplane import JSON_HEADERS

from shoprec.serving.predictor import ServerBusy, ServingUnavailable
from shoprec.serving.requests import MAX_BODY_BYTES, bounded

logger = logging.getLogger("shoprec.serving.predictor")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The routes that take a request body: V1 predict / explain, V2 infer (with or without a version).
BODY_ROUTES = re.compile(r"^/v1/models/[^/]+:(predict|explain)$|^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
BINARY_HEADER = b"inference-header-content-length"
INTERNAL_ERROR = "internal error while answering the request; the server log has the details"


class BodyTooLarge(Exception):
    """A chunked body went past the cap while it was read."""


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "InferenceRequest")]
    return ".".join(parts) or "body"


async def validation_error_handler(_: Any, exc: RequestValidationError) -> JSONResponse:
    # The V2 body is "InferenceRequest | bytes": the bytes alternative's error says nothing useful.
    errors = [e for e in exc.errors() if tuple(e.get("loc", ()))[1:2] != ("bytes",)] or exc.errors()
    problems = [f"{_field(e.get('loc', ()))[:100]}: {e.get('msg', 'invalid')}" for e in errors][:5]
    return JSONResponse(status_code=400, content={"error": bounded("invalid request: " + "; ".join(problems))})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": bounded(message)}, headers=headers)


class RequestGuard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if scope["method"] == "POST" and BODY_ROUTES.match(scope["path"]):
                refused, receive = await self._admit(scope, receive)
                if refused is not None:
                    await refused(scope, receive, send)
                    return
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:  # the answer is on its way: nothing better to do than log it
                raise
            await self._failure(scope, exc)(scope, receive, send)

    def _failure(self, scope: Scope, exc: Exception) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return _error(413, f"the body is larger than {self.max_body_bytes} bytes")
        if isinstance(exc, ServerBusy):
            return _error(503, str(exc), {"Retry-After": "1"})
        if isinstance(exc, ServingUnavailable):
            logger.warning("503 %s: %s", scope["path"], exc)
            return _error(503, str(exc))
        request_id = _header(scope, b"x-request-id") or "none"
        logger.error("500 %s (request id %s)", scope["path"], request_id, exc_info=exc)
        return _error(500, f"{INTERNAL_ERROR} (request id {request_id[:64]})")

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[JSONResponse | None, Receive]:
        """Read the body within the cap; (a refusal, receive) or (None, a receive that replays it)
        with the Content-Type set to JSON when the body is JSON."""
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "the Content-Length header is not a number"), receive
            if int(declared) > self.max_body_bytes:
                return _error(413, f"the body is {int(declared)} bytes; at most {self.max_body_bytes} "
                                   f"per request"), receive
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                return None, _replay(b"".join(chunks), receive, message)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return _error(413, f"the body is larger than {self.max_body_bytes} bytes"), receive
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if _header(scope, BINARY_HEADER) is None:
            content_type = _header(scope, b"content-type") or ""
            if content_type not in JSON_HEADERS:
                try:
                    orjson.loads(body)
                except orjson.JSONDecodeError:
                    media = content_type.split(";")[0].strip() or "none"
                    return _error(400, f"the body is not JSON (Content-Type: {media[:80]}): send a JSON "
                                       f"object, e.g. curl -H 'Content-Type: application/json' "
                                       f"-d '{{\"instances\": [...]}}'"), receive
                _set_header(scope, b"content-type", b"application/json")
        return None, _replay(body, receive)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _set_header(scope: Scope, name: bytes, value: bytes) -> None:
    scope["headers"] = [(k, v) for k, v in scope.get("headers", ()) if k.lower() != name] + [(name, value)]


def _replay(body: bytes, receive: Receive, pending: Message | None = None) -> Receive:
    """A receive that hands the app the whole body once, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if pending is not None:
            return pending
        return await receive()

    return replay


def install_error_handlers(max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Guard the request bodies and the error answers (see the module docstring)."""
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)


def serve(server: ModelServer, models: list[Any]) -> None:
    """Run until SIGTERM / SIGINT; returns after a graceful stop."""
    server.start(models)
    logger.info("shoprec server stopped gracefully")

