"""A round trip through this repo with the library, for people exploring it (not applied:
.feastignore keeps it out of `feast apply`).

    .venv/bin/python feature_repo/workflow.py [HOME]

Builds the tables from MovieLens-100K into HOME (default ./shoprec-home), applies, materializes,
reads two users online and joins a few training rows point-in-time.
"""

import sys

from shoprec.data.loaders import load_movielens_100k
from shoprec.features.online import online_user_features
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import apply_definitions, materialize
from shoprec.features.tables import build_feature_tables
from shoprec.features.training_set import build_training_set, next_item_examples


def main() -> None:
    settings = FeatureStoreSettings.from_env(sys.argv[1] if len(sys.argv) > 1 else None)
    data = load_movielens_100k()
    build_feature_tables(data.events, data.items).write(settings.features_dir)
    store = apply_definitions(settings)
    print(materialize(store, settings))
    print(online_user_features(store, ["1", "not-a-user"], settings=settings).T)
    print(build_training_set(store, next_item_examples(data.events).tail(3)).T)


if __name__ == "__main__":
    main()
