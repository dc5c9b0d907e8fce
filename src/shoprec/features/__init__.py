"""Features: Parquet feature tables, the Feast store over them, point-in-time training sets.

Import the submodules (`tables`, `settings`, `store`, `online`, `training_set`); this package
imports nothing heavy.
"""
