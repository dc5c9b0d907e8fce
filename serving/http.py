"""What both shoprec servers add to KServe's ModelServer: a 400 (not FastAPI's 422) naming the
field for a V2 body that does not fit the Open Inference Protocol schema, and a start that
logs its graceful stop. (uvicorn handles SIGTERM: it stops accepting, lets requests in flight
finish within the grace period, then the server unloads its models and exits 0.)"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.model_server import app

logger = logging.getLogger("shoprec.serving.predictor")


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "InferenceRequest")]
    return ".".join(parts) or "body"


async def validation_error_handler(_: Any, exc: RequestValidationError) -> JSONResponse:
    # The V2 body is "InferenceRequest | bytes": the bytes alternative's error says nothing useful.
    errors = [e for e in exc.errors() if tuple(e.get("loc", ()))[1:2] != ("bytes",)] or exc.errors()
    problems = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors][:5]
    return JSONResponse(status_code=400, content={"error": "invalid request: " + "; ".join(problems)})


def install_error_handlers() -> None:
    """Answer request-schema errors with 400 and the field at fault."""
    app.add_exception_handler(RequestValidationError, validation_error_handler)


def serve(server: ModelServer, models: list[Any]) -> None:
    """Run until SIGTERM / SIGINT; returns after a graceful stop."""
    server.start(models)
    logger.info("shoprec server stopped gracefully")
