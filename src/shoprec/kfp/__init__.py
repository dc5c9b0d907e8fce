"""Shell: running pipelines on this machine (kfp.local) and on a cluster (KFP client, PyTorchJob).

Imported by the CLI and the components; never by the domain packages."""
