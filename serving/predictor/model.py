"""The KServe adapter: V1 dicts in and out; all logic lives in `shoprec.serving.predictor`."""

from __future__ import annotations

from typing import Any

from kserve import Model
from kserve.errors import InvalidInput

from shoprec.errors import InvalidRequest
from shoprec.serving.predictor import LiveModel

from shoprec.config import MODEL_NAME


class ShoprecPredictor(Model):
    """`POST /v1/models/shoprec:predict` with {"instances": [{"items": [...], "k": 10}]}
    (optional per instance: "exclude", "category", "reasons")."""

    def __init__(self, live: LiveModel, name: str = MODEL_NAME) -> None:
        super().__init__(name)
        self.live = live

    def load(self) -> bool:
        self.live.load()
        self.live.start_polling()
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            return self.live.predict_v1(payload)
        except InvalidRequest as exc:
            raise InvalidInput(str(exc)) from exc

    def stop(self) -> None:
        self.live.stop_polling()
        super().stop()
