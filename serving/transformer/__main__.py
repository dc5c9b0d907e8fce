"""Entry point: `python -m shoprec.kserve.transformer --predictor_host HOST:PORT` serves V1 and V2 on
--http_port, reading online features from the home's Feast store (or --feature_server_url) and
forwarding to the predictor. Every kserve ModelServer option is accepted too."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kserve import ModelServer, model_server
from kserve.predictor_config import PredictorConfig

from shoprec.kserve.http import install_error_handlers, serve
from shoprec.kserve.transformer.model import MODEL_NAME, ShoprecTransformer
from shoprec.serving.catalog import load_catalog
from shoprec.serving.cold_start import load_onboarding
from shoprec import schema as S
from shoprec.features.settings import FeatureStoreSettings
from shoprec.home import Home
from shoprec.serving.prediction_log import PredictionLog
from shoprec.serving.feature_sources import FeastHTTPSource, FeastSDKSource
from shoprec.features.tables import features_history_len
from shoprec.serving.requests import MAX_BODY_BYTES, history_limit
from shoprec.serving.transformer import DEFAULT_FEATURE_TIMEOUT_S, TransformerCore


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    parser.add_argument("--home", default=None, help="shoprec home (features, logs) [default: $SHOPREC_HOME].")
    parser.add_argument("--feature_timeout_ms", type=float, default=DEFAULT_FEATURE_TIMEOUT_S * 1000,
                        help="Answer from the fallback when Feast takes longer than this.")
    parser.add_argument("--feature_server_url", default=None,
                        help="A Feast feature server (feast serve) instead of the SDK on the home's store.")
    parser.add_argument("--items", default=None, help="Items table with titles (item_id, title, ...).")
    parser.add_argument("--dataset", default=None,
                        help="A dataset directory (events.parquet, optional items and users tables) "
                             "to count new users' onboarding popularity from: per stated category "
                             "and, with a users table, per segment (age band, gender, occupation) "
                             "[default: HOME/data when it holds events; without one, stated "
                             "categories use the catalogue's popularity and attributes are a 400].")
    parser.add_argument("--log_dir", default=None, help="Prediction log folder [default: HOME/logs/predictions].")
    parser.add_argument("--no_prediction_log", action="store_true", help="Do not write the prediction log.")
    parser.add_argument("--max_body_bytes", type=int, default=MAX_BODY_BYTES,
                        help=f"Largest request body read; a larger one is a 413 [default: {MAX_BODY_BYTES}].")
    args = parser.parse_args(argv)
    if args.model_name == "model":
        args.model_name = MODEL_NAME
    if not args.predictor_host:
        parser.error("--predictor_host HOST:PORT is required")
    return args


def require_log_salt_on_cluster(args: argparse.Namespace, environ: "dict[str, str] | None" = None) -> None:
    """Refuse to start on a cluster (KUBERNETES_SERVICE_HOST set) without SHOPREC_LOG_SALT:
    unkeyed, the log's user hashes are plain SHA-256 of the ids, reversible by hashing guesses.
    The manifests set it from the shoprec-prediction-log Secret; a laptop run may go without."""
    import os

    from shoprec.serving.prediction_log import SALT_ENV

    env = os.environ if environ is None else environ
    if args.no_prediction_log or not env.get("KUBERNETES_SERVICE_HOST"):
        return
    if not env.get(SALT_ENV, "").strip():
        raise SystemExit(f"{SALT_ENV} is not set: on a cluster the prediction log's user ids must be "
                         "hashed with a secret salt (Secret shoprec-prediction-log, key log-salt)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_log_salt_on_cluster(args)
    logging.getLogger("shoprec").setLevel(logging.INFO)
    home = Home.at(args.home)
    settings = FeatureStoreSettings.from_env(home)
    catalog = load_catalog(home.features if home.item_stats.exists() else None, args.items)
    source = FeastHTTPSource(args.feature_server_url) if args.feature_server_url else FeastSDKSource(settings)
    if isinstance(source, FeastSDKSource):
        source.warm_up()
    log = None if args.no_prediction_log else PredictionLog(Path(args.log_dir) if args.log_dir else home.predictions)
    # Histories (Feast's user_history, or a cart) hold at most the tables' history_len: the
    # predictor refuses a model reading a longer one, so it reads all of them.
    window = features_history_len(home.features) if home.features.exists() else None
    # Counted once here, never per request; a named dataset that cannot be read stops the start.
    dataset = args.dataset or (home.data if (home.data / S.EVENTS_FILE).exists() else None)
    onboarding = load_onboarding(dataset, catalog) if dataset else None
    if onboarding is not None:
        logging.getLogger("shoprec").info(
            "onboarding from %s: %d items, %d categories, segments by %s", dataset, len(onboarding.item_ids),
            len(onboarding.categories), list(onboarding.attributes) or "nothing (no users table)")
    core = TransformerCore(catalog, source, timeout_s=args.feature_timeout_ms / 1000, log=log,
                           max_history=history_limit(None, window), onboarding=onboarding)
    transformer = ShoprecTransformer(core, name=args.model_name)
    install_error_handlers(args.max_body_bytes)
    config = PredictorConfig(args.predictor_host, args.predictor_protocol, args.predictor_use_ssl,
                             args.predictor_request_timeout_seconds, args.predictor_request_retries,
                             args.enable_predictor_health_check)
    serve(ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=args.enable_grpc,
                      workers=1, enable_latency_logging=args.enable_latency_logging, predictor_config=config), [transformer])


if __name__ == "__main__":
    main()
