"""Fixtures every Kubernetes check shares (a fixture defined in one test module is not seen by
the modules that import its helpers)."""

from __future__ import annotations

import pytest

from tests.kubernetes.test_manifests import kubectl_path


@pytest.fixture
def kustomize() -> str:
    """kubectl, whose built-in kustomize renders the overlays; a loud skip when it is absent."""
    return kubectl_path()
