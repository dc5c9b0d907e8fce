"""A small, real serving home: an ML-100K slice validated into feature tables, applied and
materialized into the local (SQLite) online store, and a small SASRec trained on the same
events, registered and promoted. Tests and benchmarks/serving.py start the servers on it;
`shoprec serve --home` works on it too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoprec.config import DEFAULT_HISTORY_LEN
from shoprec.models.bundle import save_bundle
from shoprec.data.dataset import EventData
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import apply_definitions, materialize
from shoprec.features.tables import build_feature_tables
from shoprec.home import Home
from shoprec.lifecycle.registry import Registry
from shoprec.sequences import ItemVocab, Sequences, build_sequences, build_vocab
from shoprec.training.fit import exclude_seen_policy


@dataclass
class DemoHome:
    home: Home
    data: EventData
    vocab: ItemVocab
    sequences: Sequences
    bundle_dir: Path
    version: str
    items_path: Path
    max_len: int
    history_len: int  # how many newest items the feature store serves per user


def build_demo_home(root: str | Path, *, users: int = 40, max_len: int = 200, epochs: int = 2,
                    model: str = "sasrec", seed: int = 0, history_len: int = DEFAULT_HISTORY_LEN) -> DemoHome:
    """Build everything under `root` (a fresh folder); returns where things are.

    model: "sasrec" (trained for `epochs` on CPU) or a baseline kind ("itemknn", "markov1", ...)."""
    import numpy as np
    import torch

    from shoprec.data.loaders import limit_to_users, load_movielens_100k
    from shoprec.evaluation.splits import leave_one_out
    from shoprec.models.baselines import BASELINES
    from shoprec.models.sasrec import SASRec
    from shoprec.training.loop import TrainConfig, train

    home = Home.at(Path(root).resolve())
    data = limit_to_users(load_movielens_100k(), users)
    settings = FeatureStoreSettings(home=home)
    tables = build_feature_tables(data.events, data.items, max_len=max_len, history_len=history_len)
    tables.write(settings.features_dir)
    materialize(apply_definitions(settings), settings)
    data.write(home.data)

    vocab = build_vocab(data.events, data.items)
    sequences = build_sequences(data.events, vocab)
    exclude_seen = exclude_seen_policy(data.info)
    if model == "sasrec":
        torch.manual_seed(seed)
        net = SASRec(vocab.n_items, max_len=max_len, hidden=32, blocks=1, dropout=0.1)
        split = leave_one_out(sequences)
        train(net, split.train, split.valid,
              TrainConfig(max_epochs=epochs, batch_size=64, progress=False, device="cpu", seed=seed, amp="off"),
              exclude_seen=exclude_seen)
        net = net.eval()
    else:
        net = BASELINES[model](vocab.n_items).fit([np.asarray(s) for s in sequences.items])
    bundle_dir = save_bundle(home.bundles / model, net, vocab, exclude_seen=exclude_seen,
                             metrics={"primary": model, "models": {}},
                             snapshot_id=str(data.info.get("snapshot_id") or "ml-100k-demo"))
    registry = Registry.from_home(home)
    version = registry.register(bundle_dir, note="serving demo").version
    registry.promote(version, reason="serving demo", actor="build_demo_home")
    return DemoHome(home, data, vocab, sequences, bundle_dir, version, home.data / "items.parquet", max_len,
                    history_len)
