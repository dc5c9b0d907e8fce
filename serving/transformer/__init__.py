"""The shoprec transformer: a `kserve.Model` with a predictor_host over
`shoprec.serving.transformer.TransformerCore` (Feast features, fallbacks, metadata, reasons,
lineage, prediction log).

Run: python -m shoprec.kserve.transformer --predictor_host 127.0.0.1:8081 [--http_port 8080]
     [--home HOME] [--feature_timeout_ms 50] [--feature_server_url URL] [--items ITEMS]
     [--dataset DATASET_DIR]
"""
