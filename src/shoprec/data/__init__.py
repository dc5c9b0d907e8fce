"""Data: loading event logs into the canonical model and validating them."""
