"""Error types that carry the facts a person needs; entry points turn them into one line and an exit code."""

from __future__ import annotations

from pathlib import Path


class ShoprecError(Exception):
    """Base class: every error the CLI reports as one clear line with exit code 2."""

    exit_code = 2


class DataSourceError(ShoprecError):
    """A data set cannot be found or read (missing package, missing file, unreadable format)."""


class DataValidationError(ShoprecError):
    """The validation gate found a hard failure: the run stops, nothing downstream runs."""

    exit_code = 3

    def __init__(self, failed_checks: list[str], report_path: Path | None) -> None:
        self.failed_checks = failed_checks
        self.report_path = report_path
        where = f"; report: {report_path}" if report_path else ""
        super().__init__(f"data validation failed: {', '.join(failed_checks)}{where}")


class FeatureStoreError(ShoprecError):
    """The feature store cannot do what was asked; the message names the file, store or view."""


class FeatureTableError(FeatureStoreError):
    """Feature tables cannot be built from the given events (missing columns, nothing in range)."""


class FeatureStoreConfigError(FeatureStoreError):
    """A `feature_store.yaml` or the feature repo is broken: the message names the file and the fault."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"feature store config {path}: {problem}")


class FeatureSourceMissing(FeatureStoreError):
    """A feature view's source table is not on disk (build the features first)."""

    def __init__(self, view: str, path: Path) -> None:
        self.view = view
        self.path = path
        super().__init__(
            f"feature source for '{view}' not found: {path} (run the build_features step first)"
        )


class FeatureStoreUnavailable(FeatureStoreError):
    """The online store does not answer (Redis down, unreachable, refused)."""


class BundleError(ShoprecError):
    """A model bundle is missing, incomplete or unreadable."""


class BundleIntegrityError(BundleError):
    """The weights in a bundle are not the ones recorded at save time: loading is refused."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"model weights {path} fail the integrity check: sha256 {actual[:16]}... "
            f"but {expected[:16]}... was recorded at save time; refusing to load"
        )


class RegistryError(ShoprecError):
    """The model registry cannot do what was asked (unknown version, nothing to roll back to,
    an unreadable pointer); the message names the registry and the version."""


class InvalidRequest(ShoprecError):
    """A prediction request is malformed or too large; the message names the field at fault
    (servers answer it with HTTP 400)."""


class InfraCheckError(ShoprecError):
    """The predictor could not be started or stopped for an infrastructure check."""


class GateError(ShoprecError):
    """The promotion gate was asked to compare things that cannot be compared (different
    evaluation windows, a missing metric); the message says which."""


class MonitoringError(ShoprecError):
    """A drift report cannot be computed from what was given; the message names the window,
    the file or the columns at fault."""


class EmptyWindowError(MonitoringError):
    """The current (or reference) window holds no rows: nothing to compare."""

    def __init__(self, what: str, window: str) -> None:
        self.what, self.window = what, window
        super().__init__(f"the {what} window {window} is empty: no rows to compare "
                         f"(widen --window or check the events / prediction log)")


class SchemaMismatchError(MonitoringError):
    """The current data's columns differ from the reference's."""

    def __init__(self, report: str, missing: list[str], extra: list[str]) -> None:
        self.report, self.missing, self.extra = report, missing, extra
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        super().__init__(f"{report}: the current data's schema differs from the reference: "
                         f"{'; '.join(parts)}")


class TrainingJobError(ShoprecError):
    """A PyTorchJob failed, timed out, or succeeded without writing its bundle."""

    def __init__(self, job: str, namespace: str, problem: str) -> None:
        self.job, self.namespace, self.problem = job, namespace, problem
        super().__init__(f"PyTorchJob {namespace}/{job}: {problem}")
