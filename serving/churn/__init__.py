"""The churn model server: `python -m shoprec.kserve.churn --registry R --home H` serves the
production `shoprec-churn` version with the home's online store (KServe V1 and V2)."""
