"""The cluster predictor (manifests/base/serving-runtime.yaml) is started with its item
catalogue, so a `category` filter works there as it does under `shoprec serve`."""

from __future__ import annotations

from pathlib import Path

import yaml

from shoprec.kserve.predictor.__main__ import parse_args

RUNTIME = Path(__file__).resolve().parents[2] / "manifests" / "base" / "serving-runtime.yaml"


def test_the_cluster_predictor_gets_the_catalogue_from_a_mounted_home():
    spec = yaml.safe_load(RUNTIME.read_text())["spec"]
    container = spec["containers"][0]
    args = parse_args([a.replace("{{.Name}}", "shoprec") for a in container["args"]])
    assert args.catalog, "the cluster predictor starts without an item catalogue"
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    mounted = [name for name, path in mounts.items() if args.catalog.startswith(path.rstrip("/") + "/")]
    assert mounted, f"--catalog {args.catalog} is on no mounted volume: {mounts}"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    assert volumes[mounted[0]]["persistentVolumeClaim"]["claimName"] == "shoprec-home"
