"""Entry point: `python -m shoprec.kserve.predictor --model_dir BUNDLE` serves one verified bundle;
`--registry URI` serves the version an alias names and follows the alias without a restart.
`--campaigns PATH|URL` (or $SHOPREC_CAMPAIGNS; a local path or an object-store URL such as
s3://bucket/campaigns.parquet) loads the campaigns table a request's `campaign` names. Every
kserve ModelServer option (--http_port, --enable_grpc, ...) is accepted too."""

from __future__ import annotations

import argparse
import logging
import os

from kserve import ModelServer, model_server

from shoprec.kserve.predictor.model import MODEL_NAME, ShoprecPredictor
from shoprec.kserve.http import install_error_handlers, serve
from shoprec.features.tables import features_history_len, features_max_len
from shoprec.serving.campaigns import CAMPAIGNS_ENV, load_campaigns
from shoprec.serving.catalog import load_catalog
from shoprec.lifecycle.registry import PRODUCTION, Registry
from shoprec.ranking.sponsored import DEFAULT_FLOOR
from shoprec.serving.predictor import LiveModel, ScoringPool
from shoprec.serving.requests import MAX_BODY_BYTES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_dir", help="A model bundle directory (e.g. /mnt/models on a cluster).")
    source.add_argument("--registry", help="A registry folder or fsspec URL: serve and follow an alias.")
    parser.add_argument("--alias", default=PRODUCTION, help="The alias to follow with --registry.")
    parser.add_argument("--poll_seconds", type=float, default=1.0,
                        help="How often to check the alias for a new version.")
    parser.add_argument("--catalog", default=None,
                        help="A features folder holding item_stats.parquet: item categories for "
                             "the `category` filter (without it, a category filter is a 400). Its "
                             "features.json window (max_len) is checked: a model reading a longer "
                             "one is refused at load.")
    parser.add_argument("--items", default=None, help="An items table (item_id, category, ...) "
                                                       "for the catalogue, with or instead of --catalog.")
    parser.add_argument("--torch_threads", type=int, default=int(os.environ.get("SHOPREC_TORCH_THREADS", "1")),
                        help="Intra-op threads for scoring. One request is a few small matrix "
                             "products: one thread answers it fastest (measured 3.9 ms vs 6.9 ms "
                             "for two); raise it for large batch requests [default: 1, or "
                             "$SHOPREC_TORCH_THREADS].")
    parser.add_argument("--scoring_threads", type=int, default=1,
                        help="Requests scored at once, each in a worker thread off the event loop "
                             "(health probes keep answering during a long one) [default: 1].")
    parser.add_argument("--max_queued", type=int, default=64,
                        help="Requests that may wait for a scoring thread; beyond, a 503 with "
                             "Retry-After [default: 64].")
    parser.add_argument("--sponsored_floor", type=float, default=DEFAULT_FLOOR,
                        help="Relevance floor of sponsored items: a paid candidate is shown only "
                             "when its percentile in the user's full ranking is above it (1 = the "
                             "model's top item). A server setting: requests cannot lower it "
                             f"[default: {DEFAULT_FLOOR}].")
    parser.add_argument("--campaigns", default=os.environ.get(CAMPAIGNS_ENV) or None,
                        help="A campaigns table (Parquet or CSV: campaign_id, item_id, bid, optional "
                             "start / end in UTC), a local path or an object-store URL (s3://..., "
                             "credentials from the environment as for --registry), loaded at start: "
                             "a request's \"campaign\" names one "
                             "instead of listing its sponsored items; a table that does not check "
                             f"stops the start [default: ${CAMPAIGNS_ENV}; none: naming a campaign is a 503].")
    parser.add_argument("--max_body_bytes", type=int, default=MAX_BODY_BYTES,
                        help=f"Largest request body read; a larger one is a 413 [default: {MAX_BODY_BYTES}].")
    args = parser.parse_args(argv)
    if not 0.0 <= args.sponsored_floor <= 1.0:
        parser.error(f"--sponsored_floor is a relevance percentile in [0, 1], not {args.sponsored_floor}")
    if args.model_name == "model":  # kserve's generic default: ours is "shoprec"
        args.model_name = MODEL_NAME
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("shoprec").setLevel(logging.INFO)
    import torch

    torch.set_num_threads(max(1, args.torch_threads))
    catalog = load_catalog(args.catalog, args.items) if (args.catalog or args.items) else None
    # The window of the users' recent items: a model reading a longer one is refused at load.
    window = features_max_len(args.catalog) if args.catalog else None
    history = features_history_len(args.catalog) if args.catalog else None  # what requests may carry
    # Read and checked once here: a bad table stops the start, never a request.
    campaigns = load_campaigns(args.campaigns) if args.campaigns else None
    if campaigns is not None:
        logging.getLogger("shoprec").info("%d campaign(s) from %s: %s", len(campaigns), campaigns.source,
                                          ", ".join(campaigns.names[:20]))
    if args.model_dir:
        live = LiveModel(bundle_dir=args.model_dir, catalog=catalog, features_max_len=window,
                         sponsored_floor=args.sponsored_floor, campaigns=campaigns, features_history_len=history)
    else:
        live = LiveModel(registry=Registry(args.registry), alias=args.alias,
                         poll_seconds=args.poll_seconds, catalog=catalog, features_max_len=window,
                         sponsored_floor=args.sponsored_floor, campaigns=campaigns, features_history_len=history)
    predictor = ShoprecPredictor(live, name=args.model_name,
                                 pool=ScoringPool(args.scoring_threads, args.max_queued))
    predictor.load()
    install_error_handlers(args.max_body_bytes)
    serve(ModelServer(http_port=args.http_port, grpc_port=args.grpc_port,
                      enable_grpc=args.enable_grpc, workers=1,
                      enable_latency_logging=args.enable_latency_logging), [predictor])


if __name__ == "__main__":
    main()
