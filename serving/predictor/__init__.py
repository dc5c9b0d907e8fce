"""The shoprec predictor: a `kserve.Model` over `shoprec.serving.LiveModel`.

Run: python -m serving.predictor --model_dir BUNDLE | --registry URI [--alias production]
     [--http_port 8080] [--enable_grpc false]
"""
