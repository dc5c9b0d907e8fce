"""KServe servers: thin adapters over the shoprec library (predictor/, later transformer/)."""
