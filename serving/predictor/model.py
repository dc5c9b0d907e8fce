"""The KServe adapter: V1 dicts and V2 InferRequests in and out; all logic lives in
`shoprec.serving.predictor`.

`predict` is a coroutine that hands the parsing and scoring to a `ScoringPool` (worker threads
behind a bounded semaphore): KServe calls a synchronous `predict` on its event loop, where one
large request would stall every other request and the health probes."""

from __future__ import annotations

import uuid
from typing import Any

from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from shoprec.config import MODEL_NAME
from shoprec.errors import InvalidRequest
from shoprec.serving.predictor import LiveModel, ScoringPool, v2_outputs
from shoprec.serving.requests import PREDICTOR_V2_INPUTS, TensorInput, bounded
from shoprec.kserve.v2 import infer_response


class ShoprecPredictor(Model):
    """`POST /v1/models/shoprec:predict` with {"instances": [{"items": [...], "k": 10}]}
    (optional per instance: "exclude", "category", "reasons", "sponsored" or "campaign",
    "sponsored_slots", "diversity"), and `POST /v2/models/shoprec/infer` with a BYTES `items`
    input [n, L] (histories padded with "") and the same options as tensors
    (`shoprec.serving.requests.parse_v2`), answered with the outputs the client asks for
    (`shoprec.kserve.v2.infer_response`)."""

    def __init__(self, live: LiveModel, name: str = MODEL_NAME, pool: ScoringPool | None = None) -> None:
        super().__init__(name)
        self.live = live
        self.pool = pool or ScoringPool()

    def load(self) -> bool:
        self.live.load()
        self.live.start_polling()
        self.ready = True
        return self.ready

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        try:
            if isinstance(payload, InferRequest):
                # The answer's id is the request's (the V2 response must carry one).
                request_id = payload.id or (headers or {}).get("x-request-id") or str(uuid.uuid4())
                return await self.pool.run(self._infer, payload, request_id)
            return await self.pool.run(self.live.predict_v1, payload)
        except InvalidRequest as exc:
            raise InvalidInput(bounded(str(exc))) from exc

    def _infer(self, request: InferRequest, request_id: str) -> InferResponse:
        body = self.live.predict_v2([TensorInput(i.name, i.datatype, list(i.shape), i.data) for i in request.inputs])
        return infer_response(request, request_id, self.name, v2_outputs(body["predictions"]), body,
                              hint=" (reason_item_id and history_used come with input 'reasons')")

    def get_input_types(self) -> list[dict[str, Any]]:
        shapes = {"items": [-1, -1], "exclude": [-1, -1], "category": [-1], "reasons": [-1],
                  "sponsored_item_id": [-1], "sponsored_bid": [-1]}
        return [{"name": name, "datatype": datatype, "shape": shapes.get(name, [1])}
                for name, datatype in PREDICTOR_V2_INPUTS.items()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "item_id", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "score", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "sponsored", "datatype": "BOOL", "shape": [-1, -1]},
                # With input `reasons` only (`v2_outputs`).
                {"name": "reason_item_id", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "history_used", "datatype": "INT32", "shape": [-1]}]

    def stop(self) -> None:
        self.live.stop_polling()
        self.pool.close()
        super().stop()
