"""Entry point: `python -m shoprec.kserve.churn --registry URI --home H` serves the churn
model's production version (or `--version V`, or `--model_dir B`), reading user_stats from the
home's online store. Every kserve ModelServer option (--http_port, ...) is accepted too."""

from __future__ import annotations

import argparse
import logging

from kserve import ModelServer, model_server

from shoprec.churn.bundle import CHURN_MODEL_NAME, churn_registry, load_churn_bundle, load_registered
from shoprec.churn.scoring import score_users
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import open_store
from shoprec.kserve.churn.model import ChurnModel
from shoprec.kserve.http import install_error_handlers, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_dir", help="A churn bundle directory.")
    source.add_argument("--registry", help="The platform's registry root (folder or fsspec URL); "
                                           f"the churn model lives under <root>/{CHURN_MODEL_NAME}.")
    parser.add_argument("--version", default=None, help="A registered version (default: production).")
    parser.add_argument("--home", default=None, help="The shoprec home whose online store holds user_stats.")
    args = parser.parse_args(argv)
    if args.model_name == "model":  # kserve's generic default
        args.model_name = CHURN_MODEL_NAME
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("shoprec").setLevel(logging.INFO)
    import torch

    torch.set_num_threads(1)  # one request is a few tiny matrix products
    if args.model_dir:
        bundle, version = load_churn_bundle(args.model_dir), "bundle"
    else:
        bundle, version = load_registered(churn_registry(args.registry), args.version)
    settings = FeatureStoreSettings.from_env(args.home)
    store = open_store(settings)
    model = ChurnModel(lambda ids: score_users(bundle, store, ids, settings), version, name=args.model_name)
    install_error_handlers()
    serve(ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=args.enable_grpc,
                      workers=1), [model])


if __name__ == "__main__":
    main()
