"""The pipeline's evaluate step reports what the list policies cost: its Markdown report holds
the sponsored-slot table (NDCG@10 by relevance floor, the serving default marked) and the
NDCG@10 / intra-list diversity / long-tail exposure table for a few diversity values, with
the same figures the trade-off functions give on the same users, and its metrics hold them."""

# No `from __future__ import annotations`: the KFP component reads its signature.
import os
import re
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import pytest
import torch
from kfp import dsl

from shoprec.components.evaluate import evaluate
from shoprec.data.loaders import limit_to_users, load_movielens_100k
from shoprec.evaluation.report import DIVERSITY, FLOORS, evaluate_bundle
from shoprec.evaluation.splits import SplitSpec, cap_users, make_split
from shoprec.evaluation.tradeoffs import diversity_tradeoff, sponsored_cost
from shoprec.models.baselines import ItemKNN
from shoprec.models.content import category_codes
from shoprec.models.bundle import save_bundle
from shoprec.ranking.sponsored import DEFAULT_FLOOR
from shoprec.sequences import build_vocab


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A real ML-100K slice, an ItemKNN bundle saved with its split, and that split."""
    torch.set_num_threads(1)
    data = limit_to_users(load_movielens_100k(), 250)
    vocab = build_vocab(data.events, data.items)
    split = make_split(data.events, vocab, SplitSpec())
    model = ItemKNN(vocab.n_items).fit(split.train)
    home = tmp_path_factory.mktemp("tradeoff-report")
    bundle = save_bundle(home / "bundle", model, vocab, exclude_seen=True, metrics={},
                         training={"split": split.spec.to_dict()})
    popularity = np.zeros(vocab.n_items + 1)
    np.add.at(popularity, np.concatenate(split.train), 1.0)
    return {"data": data, "home": home, "bundle": bundle, "model": model, "split": split,
            "features": category_codes(data.items, vocab)[0].numpy(), "popularity": popularity}


def table_row(text: str, heading: str, first_cell: str) -> list[str]:
    """The cells of the row starting with `first_cell` in the table under `heading`."""
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} under {heading!r}:\n{section}")


def test_the_evaluate_step_writes_the_sponsored_and_diversity_tradeoffs(case, tmp_path):
    clean = dsl.Dataset(name="clean", uri=str(case["data"].write(tmp_path / "clean")))
    model = dsl.Model(name="model", uri=str(case["bundle"]))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    report = dsl.Markdown(name="report", uri=str(tmp_path / "report.md"))
    evaluate.python_func(clean=clean, model=model, metrics=metrics, report=report)
    text = Path(report.path).read_text()

    # The figures, worked out here from the same model and users with the trade-off functions.
    users = case["split"].test  # 250 users: under the cap, every test user is replayed
    assert f"all {len(users)} test users" in text
    sponsored = {row["floor"]: row for row in sponsored_cost(case["model"], users, exclude_seen=True, floors=FLOORS)}
    organic = table_row(text, "### Sponsored slots", "organic")
    assert organic[1] == f"{sponsored[None]['NDCG@10']:.4f}"
    default = table_row(text, "### Sponsored slots", f"{DEFAULT_FLOOR:g} (serving default)")
    expected = sponsored[DEFAULT_FLOOR]
    assert default[1:5] == [f"{expected['NDCG@10']:.4f}", f"{expected['delta']:+.4f}",
                            f"{expected['delta_low']:+.4f} .. {expected['delta_high']:+.4f}",
                            f"{expected['fill']:.2f}"]
    # What the slots cost: at floor 0 every list carries two paid items and loses NDCG@10; a
    # higher floor places fewer.
    anything = table_row(text, "### Sponsored slots", "0")
    assert float(anything[4]) == 2.0 and float(anything[2]) < 0.0
    assert float(table_row(text, "### Sponsored slots", "0.99")[4]) < float(default[4]) < 2.0

    diverse = {row["diversity"]: row for row in diversity_tradeoff(
        case["model"], users, exclude_seen=True, features=case["features"], popularity=case["popularity"],
        values=DIVERSITY)}
    for value in DIVERSITY:
        row = table_row(text, "### Diversity", f"{value:g}")
        want = diverse[value]
        assert row[1] == f"{want['NDCG@10']:.4f}" and row[5] == f"{want['ILD@10']:.3f}"
        assert row[6] == f"{want['long_tail_share']:.4f}"
    assert float(table_row(text, "### Diversity", "1")[5]) > float(table_row(text, "### Diversity", "0")[5])

    # The same figures as the step's metrics (KFP metric names: "@" -> "_at_").
    logged = metrics.metadata
    assert logged["sponsored_floor90_NDCG_at_10_delta"] == pytest.approx(expected["delta"], abs=1e-6)
    assert logged["diversity30_ILD_at_10"] == pytest.approx(diverse[0.3]["ILD@10"], abs=1e-6)
    assert logged["diversity100_long_tail_share"] == pytest.approx(diverse[1.0]["long_tail_share"], abs=1e-6)


def test_the_tradeoffs_replay_a_capped_sample_and_can_be_left_out(case):
    capped = evaluate_bundle(case["bundle"], case["data"], baselines=("mostpop",), bootstrap=50, tradeoff_users=60)
    test = case["split"].test
    assert f"60 of the {len(test)} test users" in capped.markdown
    assert capped.tradeoffs["sponsored"][0]["users"] == 60
    sample = cap_users(test, 60, case["split"].spec.seed)
    again = sponsored_cost(case["model"], sample, exclude_seen=True, floors=FLOORS, bootstrap=50)
    assert pd.DataFrame(capped.tradeoffs["sponsored"]).equals(pd.DataFrame(again))  # NaN == NaN here

    plain = evaluate_bundle(case["bundle"], case["data"], baselines=("mostpop",), bootstrap=50, tradeoffs=False)
    assert "### Sponsored slots" not in plain.markdown and plain.tradeoffs == {}
    assert not [name for name in plain.scalars if re.match(r"(sponsored_floor|diversity\d)", name)]
    # The models' own figures do not depend on the trade-offs.
    assert {k: v for k, v in capped.scalars.items() if k in plain.scalars} == plain.scalars
