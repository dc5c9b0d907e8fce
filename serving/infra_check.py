"""Infra validation before promotion: start the real KServe predictor (shoprec.kserve.predictor) on a
free localhost port in a subprocess, send canned V1 requests over HTTP, compare every answer
with `BundleRecommender.recommend` for the same histories, check that bad input gets HTTP 400, stop it.

A bundle that fails to load or to answer is rejected with the reason (the predictor's own
error line when it dies on start-up)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoprec.models.bundle import VOCAB_FILE
from shoprec.config import MODEL_NAME
from shoprec.errors import InfraCheckError
from shoprec.kserve.process import http_json, running_predictor
from shoprec.lifecycle.gate import Check
from shoprec.sequences import ItemVocab

PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"


@dataclass(frozen=True)
class InfraCheckResult:
    """passed, one sentence why, and each failed expectation."""

    passed: bool
    reason: str
    requests: int
    failures: tuple[str, ...] = ()

    def as_check(self) -> Check:
        return Check("infra check (KServe predictor on localhost)", self.passed, self.reason,
                     {"requests": self.requests, "failures": list(self.failures)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canned_instances(vocab: ItemVocab, seed: int = 0) -> list[dict[str, Any]]:
    """V1 instances covering the cases a live server meets: no history, one item, a longer
    history, an unknown item id, k of 1, 10 and larger than the catalogue allows."""
    ids = list(vocab.ids)
    rng = np.random.default_rng(seed)
    some = [ids[int(i)] for i in rng.choice(len(ids), size=min(5, len(ids)), replace=False)]
    return [
        {"items": [], "k": 10},
        {"items": [ids[0]], "k": 10},
        {"items": [ids[-1]], "k": 1},
        {"items": some, "k": 10},
        {"items": ["no-such-item-shoprec-check", *some[:2]], "k": 5},
        {"items": some[::-1], "k": min(50, max(1, len(ids)))},
    ]


def predict(base_url: str, instances: list[dict[str, Any]], timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    """One V1 predict call: (HTTP status, JSON body)."""
    return http_json("POST", base_url + PREDICT_PATH, {"instances": instances}, timeout)


def compare(expected: list[dict[str, Any]], got: list[dict[str, Any]], what: str) -> list[str]:
    """Differences between expected and served answers (same items in order; scores to 1e-5)."""
    if len(got) != len(expected):
        return [f"{what}: {len(got)} predictions for {len(expected)} instances"]
    problems = []
    for n, (want, have) in enumerate(zip(expected, got)):
        if have.get("items") != want["items"]:
            problems.append(f"{what}[{n}]: items {have.get('items')} != expected {want['items']}")
        elif not np.allclose(have.get("scores", []), want["scores"], rtol=1e-5, atol=1e-6):
            problems.append(f"{what}[{n}]: scores {have.get('scores')} != expected {want['scores']}")
    return problems


def check_bundle(bundle_dir: str | Path, *, timeout_s: float = 60.0,
                 instances: list[dict[str, Any]] | None = None) -> InfraCheckResult:
    """Serve `bundle_dir` with the real predictor and check its answers (see the module doc)."""
    from shoprec.models.inference import BundleRecommender
    from shoprec.serving.predictor import answer
    from shoprec.serving.requests import parse_v1

    bundle_dir = Path(bundle_dir)
    try:
        instances = instances or canned_instances(ItemVocab.read(bundle_dir / VOCAB_FILE))
    except (OSError, ValueError, KeyError) as exc:
        return InfraCheckResult(False, f"cannot read the bundle's item vocabulary: {exc}", 0)
    sent, failures, served = 0, [], {}
    try:
        with running_predictor(["--model_dir", str(bundle_dir)], timeout_s=timeout_s) as base:
            for what, batch in (("batch", instances), ("single", instances[1:2])):
                sent += 1
                status, body = predict(base, batch)
                if status != 200:
                    failures.append(f"{what} request answered HTTP {status}: {body.get('error', body)}")
                else:
                    served[what] = body.get("predictions", [])
            sent += 1
            status, body = predict(base, [{"items": "not-a-list"}])
            if status != 400:
                failures.append(f"a malformed request got HTTP {status}, not 400")
    except InfraCheckError as exc:
        return InfraCheckResult(False, f"the predictor could not serve the bundle: {exc}", sent)
    if not failures:
        try:  # the reference: the one inference path, in this process
            expected = answer(BundleRecommender.from_bundle(bundle_dir), parse_v1({"instances": instances}))
        except Exception as exc:
            return InfraCheckResult(False, f"the bundle cannot answer: {type(exc).__name__}: {exc}", sent)
        failures += compare(expected, served["batch"], "batch")
        failures += compare(expected[1:2], served["single"], "single")
    if failures:
        return InfraCheckResult(False, f"{len(failures)} answer(s) wrong: {failures[0]}", sent,
                                tuple(failures))
    return InfraCheckResult(True, f"{sent} requests ({len(instances)} canned instances) answered "
                                  "as BundleRecommender.recommend does; malformed input got 400", sent)
