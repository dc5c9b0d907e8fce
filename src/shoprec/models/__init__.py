"""Recommenders behind one contract (base.py): the SASRec transformer and honest baselines."""
