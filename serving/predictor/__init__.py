"""The shoprec predictor: a `kserve.Model` over `shoprec.serving.predictor.LiveModel`.

Run: python -m shoprec.kserve.predictor --model_dir BUNDLE | --registry URI [--alias production]
     [--http_port 8080] [--enable_grpc false] [--sponsored_floor 0.9]
"""
