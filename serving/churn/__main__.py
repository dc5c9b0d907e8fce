"""Entry point: `python -m shoprec.kserve.churn --registry URI --home H` serves the churn model's
version under an alias (default production) and follows the alias without a restart;
`--version V` serves one registered version, `--model_dir B` one bundle folder (/mnt/models on a
cluster, where the deploy step rolls out each promoted version). It reads user_stats from the
home's online store. Every kserve ModelServer option (--http_port, ...) is accepted too."""

from __future__ import annotations

import argparse
import logging

from kserve import ModelServer, model_server

from shoprec.churn.bundle import CHURN_MODEL_NAME, churn_registry
from shoprec.churn.live import LiveChurn
from shoprec.churn.scoring import score_users
from shoprec.features.settings import FeatureStoreSettings
from shoprec.features.store import open_store
from shoprec.kserve.churn.model import ChurnModel
from shoprec.kserve.http import install_error_handlers, serve
from shoprec.lifecycle.registry import PRODUCTION


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_dir", help="A churn bundle directory (e.g. /mnt/models on a cluster).")
    source.add_argument("--registry", help="The platform's registry root (folder or fsspec URL); "
                                           f"the churn model lives under <root>/{CHURN_MODEL_NAME}.")
    parser.add_argument("--alias", default=PRODUCTION, help="The alias to follow with --registry.")
    parser.add_argument("--version", default=None,
                        help="With --registry: serve this registered version and follow nothing.")
    parser.add_argument("--poll_seconds", type=float, default=1.0,
                        help="How often to check the alias for a new version.")
    parser.add_argument("--home", default=None, help="The shoprec home whose online store holds user_stats.")
    args = parser.parse_args(argv)
    if args.version and not args.registry:
        parser.error("--version names a version of --registry")
    if args.model_name == "model":  # kserve's generic default
        args.model_name = CHURN_MODEL_NAME
    return args


def live_churn(args: argparse.Namespace) -> LiveChurn:
    """What the arguments ask to serve: a bundle folder, one registered version, or an alias."""
    if args.model_dir:
        return LiveChurn(bundle_dir=args.model_dir)
    registry = churn_registry(args.registry)
    if args.version:  # its local copy, every file checked against the registry's record
        return LiveChurn(bundle_dir=registry.bundle_dir(args.version))
    return LiveChurn(registry=registry, alias=args.alias, poll_seconds=args.poll_seconds)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("shoprec").setLevel(logging.INFO)
    import torch

    torch.set_num_threads(1)  # one request is a few tiny matrix products
    settings = FeatureStoreSettings.from_env(args.home)
    store = open_store(settings)
    model = ChurnModel(live_churn(args), lambda bundle, ids: score_users(bundle, store, ids, settings),
                       name=args.model_name)
    model.load()
    install_error_handlers()
    serve(ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=args.enable_grpc,
                      workers=1), [model])


if __name__ == "__main__":
    main()
