"""The pipeline's `promote` step: window, gate, infra check, registration (the alias is moved
by `deploy`). The infra check starts a real predictor, so the shell passes it in."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoprec.evaluation.splits import SplitSpec
from shoprec.lifecycle.gate import Check, Policy, PromotionDecision, gate_bundle
from shoprec.lifecycle.window import newest_window, reads_sessions
from shoprec.models.bundle import CONFIG_FILE, load_bundle

# Checks a candidate bundle on the real serving stack (shoprec.kserve.infra_check.check_bundle).
InfraCheck = Callable[[Path], Check]


@dataclass(frozen=True)
class PromotionOutcome:
    """The decision (gate + infra check) and the registry version the candidate was recorded as."""

    decision: PromotionDecision
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **self.decision.to_dict()}


def run_promotion(candidate_dir: str | Path, data_dir: str | Path, registry: Any,
                  policy: Policy = Policy(), *, infra_check: InfraCheck) -> PromotionOutcome:
    """The `promote` step: build the newest evaluation window from the data set (the split the
    candidate was trained with, as its bundle records), score the candidate against the
    registry's production version (or the first-run baselines), run the infra check, and
    register the candidate as a new version whatever the verdict (so a person can still promote
    it by hand). The alias is not moved here: that is `deploy`'s job."""
    from shoprec.data.dataset import EventData

    candidate_dir = Path(candidate_dir)
    config = load_bundle(candidate_dir).config  # refuses a bundle whose weights fail their sha256
    data = EventData.read(data_dir)
    champion = registry.production()
    champion_dir = registry.bundle_dir(champion) if champion else None
    # config.json alone says whether the champion reads sessions (its weights load in the gate).
    champion_config = json.loads((Path(champion_dir) / CONFIG_FILE).read_text()) if champion_dir is not None else {}
    window = newest_window(data.events, data.items, SplitSpec.from_dict(config.get("training", {}).get("split")),
                           sessions=reads_sessions(config) or reads_sessions(champion_config))
    decision = gate_bundle(candidate_dir, window, champion_dir, policy,
                           champion_name=f"champion {champion}" if champion else None)
    decision = decision.with_check(infra_check(candidate_dir))
    metrics = {name: value for name, value in (
        (f"NDCG@{policy.k}", decision.metrics.get(f"candidate NDCG@{policy.k}")),
        ("coverage", decision.metrics.get("candidate coverage")),
        (f"short-history NDCG@{policy.k}", decision.metrics.get(f"candidate short-history NDCG@{policy.k}")),
    ) if value is not None}
    version = registry.register(candidate_dir, metrics={**metrics, "window": window.kind},
                                note=f"gate: {'promote' if decision.promote else 'reject'}")
    return PromotionOutcome(decision, version.version)
