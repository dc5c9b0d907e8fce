"""shoprec: an MLOps platform for e-commerce personalized recommendation.

The package is the library: plain typed functions. Entry points (the CLI, KFP components,
KServe servers) are thin shells around it; nothing here runs at import time.
"""

__version__ = "0.1.0"
