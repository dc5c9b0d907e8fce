"""The KServe adapter: converts V1 dicts / V2 InferRequests to the library's types and back;
the base class forwards the preprocessed request to the predictor."""

from __future__ import annotations

import contextvars
import re
from typing import Any

import httpx
from kserve import InferRequest, Model
from kserve.errors import InvalidInput, ModelNotReady

from shoprec.errors import InvalidRequest
from shoprec.serving.requests import V2_INPUTS, TensorInput, bounded, parse_request_v1, parse_request_v2
from shoprec.serving.transformer import Pending, TransformerCore, v2_outputs
from shoprec.kserve.v2 import infer_response

from shoprec.config import MODEL_NAME
# preprocess and postprocess run in the same task: the request's plan travels in its context,
# and so does a V2 request (the outputs it asks for, in binary or not).
_pending: contextvars.ContextVar[Pending] = contextvars.ContextVar("shoprec_pending")
_v2_request: contextvars.ContextVar[InferRequest | None] = contextvars.ContextVar("shoprec_v2_request", default=None)


def client_instances(message: str, pending: Pending | None) -> str:
    """A predictor error's "instances[j]" as the client's instance index (cold-start instances
    never reach the predictor, so the two numberings differ)."""
    if pending is None:
        return message
    client = {plan.slot: n for n, plan in enumerate(pending.plans) if plan.slot is not None}
    return re.sub(r"instances\[(\d+)\]",
                  lambda m: f"instances[{client.get(int(m.group(1)), int(m.group(1)))}]", message)


class ShoprecTransformer(Model):
    """V1 `POST /v1/models/shoprec:predict` and V2 `POST /v2/models/shoprec/infer`."""

    def __init__(self, core: TransformerCore, name: str = MODEL_NAME) -> None:
        super().__init__(name, return_response_headers=True)
        self.core = core
        self.ready = True

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        request_id = (headers or {}).get("x-request-id")
        try:
            if isinstance(payload, InferRequest):
                queries = parse_request_v2([TensorInput(i.name, i.datatype, list(i.shape), i.data)
                                            for i in payload.inputs])
                protocol, request_id = "v2", request_id or payload.id
            else:
                queries, protocol = parse_request_v1(payload, self.core.max_history), "v1"
            self.core.check(queries, protocol)  # stated preferences this server cannot use: before any work
        except InvalidRequest as exc:
            raise InvalidInput(bounded(str(exc))) from exc
        pending = await self.core.prepare(queries, request_id, protocol)
        _pending.set(pending)
        _v2_request.set(payload if isinstance(payload, InferRequest) else None)
        return self.core.predictor_payload(pending)

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Any:
        if not payload:
            if self.core.lineage:
                return None  # every instance is a fallback: nothing for the model to do
            # No model answer seen yet: one tiny request, only so the fallbacks carry the lineage
            # of the model that would have answered; a predictor that fails it changes nothing.
            try:
                return await super().predict({"instances": [{"items": [], "k": 1}]}, headers)
            except Exception:
                return None
        try:
            return await super().predict(payload, headers, response_headers)
        except httpx.HTTPStatusError as exc:
            detail = bounded(exc.response.text, 300)
            if exc.response.status_code == 400:
                # The predictor numbers only the instances the model answers: name the client's.
                detail = client_instances(detail, _pending.get(None))
                raise InvalidInput(f"the predictor refused the request: {detail}") from exc
            raise ModelNotReady(self.name, f"predictor answered HTTP {exc.response.status_code}: {detail}") from exc
        except httpx.TransportError as exc:
            host = self.predictor_config.predictor_host if self.predictor_config else "?"
            raise ModelNotReady(self.name, f"predictor {host} unreachable: {type(exc).__name__}") from exc

    async def postprocess(self, result: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> Any:
        pending = _pending.get()
        try:
            answer = self.core.finish(pending, result)
        except InvalidRequest as exc:
            raise InvalidInput(bounded(str(exc))) from exc
        request = _v2_request.get()
        response: Any = answer
        if pending.protocol == "v2" and request is not None:
            # The outputs the client asked for, binary where it asked, as the predictor answers
            # (an unknown output is a 400 before the answer is logged as given).
            response = infer_response(request, pending.request_id, self.name, v2_outputs(answer), answer)
        self.core.record(pending, answer)
        if response_headers is not None:
            # Drop the predictor's own transport headers; add ours.
            for key in [k for k in response_headers if k.lower() in ("content-length", "content-type", "date", "server")]:
                response_headers.pop(key)
            response_headers.update(self.core.lineage_headers(answer))
        return response

    def stop(self) -> None:
        if self.core.log is not None:
            self.core.log.close()
        super().stop()

    def get_input_types(self) -> list[dict[str, Any]]:
        shapes = {"user_id": [-1], "exclude": [-1, -1], "category": [-1], "sponsored_item_id": [-1],
                  "sponsored_bid": [-1]}
        return [{"name": name, "datatype": datatype, "shape": shapes.get(name, [1])}
                for name, datatype in V2_INPUTS.items()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "item_id", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "score", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "reason", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "sponsored", "datatype": "BOOL", "shape": [-1, -1]},
                {"name": "fallback", "datatype": "BYTES", "shape": [-1]}]
