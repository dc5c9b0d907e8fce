"""The KServe adapter: V1 dicts in and out; all logic lives in `shoprec.serving.predictor`.

`predict` is a coroutine that hands the parsing and scoring to a `ScoringPool` (worker threads
behind a bounded semaphore): KServe calls a synchronous `predict` on its event loop, where one
large request would stall every other request and the health probes."""

from __future__ import annotations

from typing import Any

from kserve import Model
from kserve.errors import InvalidInput

from shoprec.config import MODEL_NAME
from shoprec.errors import InvalidRequest
from shoprec.serving.predictor import LiveModel, ScoringPool
from shoprec.serving.requests import bounded


class ShoprecPredictor(Model):
    """`POST /v1/models/shoprec:predict` with {"instances": [{"items": [...], "k": 10}]}
    (optional per instance: "exclude", "category", "reasons", "sponsored", "sponsored_slots",
    "diversity")."""

    def __init__(self, live: LiveModel, name: str = MODEL_NAME, pool: ScoringPool | None = None) -> None:
        super().__init__(name)
        self.live = live
        self.pool = pool or ScoringPool()

    def load(self) -> bool:
        self.live.load()
        self.live.start_polling()
        self.ready = True
        return self.ready

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            return await self.pool.run(self.live.predict_v1, payload)
        except InvalidRequest as exc:
            raise InvalidInput(bounded(str(exc))) from exc

    def stop(self) -> None:
        self.live.stop_polling()
        self.pool.close()
        super().stop()
