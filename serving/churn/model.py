"""The KServe adapter for `shoprec-churn`: V1 dicts and V2 InferRequests in, the library's
churn answers out; all logic lives in `shoprec.churn.scoring` (the answers) and
`shoprec.churn.live` (which version answers: a fixed bundle, or the alias followed live).

V1  POST /v1/models/shoprec-churn:predict  {"user_id": "u1"}  -> {"user_id", "churn_probability",
    "drivers": [...], "known", "model_version"}; {"instances": [{"user_id": ...}, ...]} ->
    {"predictions": [...]}.
V2  POST /v2/models/shoprec-churn/infer  input `user_id` BYTES [n] -> outputs churn_probability
    FP32 [n] (NaN for an unknown user), known BOOL [n], drivers BYTES [n] (each a JSON list).
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from shoprec.churn.bundle import CHURN_MODEL_NAME
from shoprec.churn.live import ChurnScorer, LiveChurn

MAX_USERS = 1000  # one request's bound: a campaign list goes through `shoprec churn --batch`


def _user_ids_v1(payload: Any) -> tuple[list[str], bool]:
    """(user ids, whether the body was a single {"user_id": ...})."""
    if isinstance(payload, dict) and "user_id" in payload:
        return [str(payload["user_id"])], True
    if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
        ids = []
        for i, instance in enumerate(payload["instances"]):
            if not isinstance(instance, dict) or "user_id" not in instance:
                raise InvalidInput(f"instances[{i}] needs a user_id")
            ids.append(str(instance["user_id"]))
        return ids, False
    raise InvalidInput('expected {"user_id": ...} or {"instances": [{"user_id": ...}, ...]}')


class ChurnModel(Model):
    """Scores users by id with the churn bundle `live` serves now and the online store."""

    def __init__(self, live: LiveChurn, score: ChurnScorer, name: str = CHURN_MODEL_NAME) -> None:
        super().__init__(name)
        self.live = live
        self.score = score

    def load(self) -> bool:
        self.live.load()
        self.live.start_polling()  # a no-op for a fixed bundle
        self.ready = True
        return self.ready

    def stop(self) -> None:
        self.live.stop_polling()
        super().stop()

    def _score(self, user_ids: list[str]) -> list[dict[str, Any]]:
        if not user_ids:
            raise InvalidInput("no user_id given")
        if len(user_ids) > MAX_USERS:
            raise InvalidInput(f"{len(user_ids)} users in one request; at most {MAX_USERS}")
        return self.live.answer(user_ids, self.score)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            return self._predict_v2(payload)
        user_ids, single = _user_ids_v1(payload)
        answers = self._score(user_ids)
        return answers[0] if single else {"predictions": answers}

    def _predict_v2(self, request: InferRequest) -> InferResponse:
        found = [i for i in request.inputs if i.name == "user_id"]
        if not found:
            raise InvalidInput("V2 request needs a BYTES input named user_id")
        user_ids = [u.decode() if isinstance(u, bytes) else str(u) for u in found[0].data]
        answers = self._score(user_ids)
        n = len(answers)
        probability = [math.nan if a["churn_probability"] is None else a["churn_probability"] for a in answers]
        outputs = [InferOutput("churn_probability", [n], "FP32", probability),
                   InferOutput("known", [n], "BOOL", [a["known"] for a in answers]),
                   InferOutput("drivers", [n], "BYTES", [json.dumps(a["drivers"]) for a in answers])]
        # The Open Inference Protocol's response id is a string: echo the request's, else a new one.
        return InferResponse(request.id or str(uuid.uuid4()), self.name, outputs,
                             model_version=answers[0]["model_version"])

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "user_id", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "churn_probability", "datatype": "FP32", "shape": [-1]},
                {"name": "known", "datatype": "BOOL", "shape": [-1]},
                {"name": "drivers", "datatype": "BYTES", "shape": [-1]}]
