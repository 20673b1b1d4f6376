"""Every path the pipeline uses, from one place.

Environment variables (all optional):

- ``FERRO_ROOT``: project root; default: the checkout this package lives in when it has
  a ``raw_measurements/`` folder, else the current directory.
- ``FERRO_STORE``: measurement store root (default ``<root>/raw_measurements/store``), a
  folder or ``s3://bucket/prefix`` (``pipeline.storage``).
- ``FERRO_INCOMING``: landing folder (default ``<root>/raw_measurements/incoming``).
- ``FERRO_QUARANTINE``: quarantine folder (default ``<root>/raw_measurements/quarantine``).
- ``FERRO_REGISTRY``: device-model registry root (default ``<root>/models``), a folder or
  ``s3://bucket/prefix``.
- ``FERRO_REGISTRY_DB``: the registry index: a SQLite file or ``postgresql://...``
  (default ``<registry>/index.sqlite``; required for a remote registry).
- ``FERRO_REPORTS``: where ``ferroflow report`` writes (default ``<registry>/reports``, or
  ``<root>/reports`` for a remote registry).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .storage import is_url, location


def _default_root() -> Path:
    env = os.environ.get("FERRO_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "raw_measurements").is_dir():
        return checkout
    return Path.cwd()


@dataclass(frozen=True)
class Settings:
    root: Path
    store: Path | str        # a str when it is a URL
    incoming: Path
    quarantine: Path
    registry: Path | str     # a str when it is a URL
    reports: Path

    @property
    def processed(self) -> Path:
        """Where landing-folder files go once stored."""
        return self.incoming.parent / "processed"

    @property
    def sample(self) -> Path:
        return self.root / "raw_measurements" / "sample"

    def with_overrides(self, **kwargs) -> "Settings":
        clean = {k: location(v) for k, v in kwargs.items() if v is not None}
        if "registry" in clean and "FERRO_REPORTS" not in os.environ:
            clean.setdefault("reports", _reports(clean["registry"], self.root))
        return replace(self, **clean)


def get_settings() -> Settings:
    root = _default_root()

    def path(var: str, default: Path) -> Path | str:
        value = os.environ.get(var)
        return location(value) if value else default

    raw = root / "raw_measurements"
    registry = path("FERRO_REGISTRY", root / "models")
    return Settings(
        root=root,
        store=path("FERRO_STORE", raw / "store"),
        incoming=path("FERRO_INCOMING", raw / "incoming"),
        quarantine=path("FERRO_QUARANTINE", raw / "quarantine"),
        registry=registry,
        reports=path("FERRO_REPORTS", _reports(registry, root)),
    )


def _reports(registry: Path | str, root: Path) -> Path:
    return root / "reports" if is_url(registry) else Path(registry) / "reports"
