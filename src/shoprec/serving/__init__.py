"""Serving logic, shell-free: request parsing and bounds, predictor and transformer cores,
reasons, catalogue, cold start and the prediction log. KServe adapters live in shoprec.kserve."""
