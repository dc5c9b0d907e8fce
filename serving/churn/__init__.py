"""The churn model server: `python -m shoprec.kserve.churn --registry R --home H` serves the
version under the `shoprec-churn` production alias, and follows the alias, with the home's online
store (KServe V1 and V2); `--model_dir B` serves one bundle (/mnt/models on a cluster)."""
