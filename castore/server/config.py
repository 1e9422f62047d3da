"""One server's configuration (:class:`ServerConfig`), built once and handed to every worker.

``castore serve`` builds it from its options (:mod:`castore.cli.serve`); the workers, which
gunicorn forks from the master or a hand-run uvicorn starts afresh, read it back with
:func:`server_config`: it travels as JSON in one environment variable,
:data:`CONFIG_VARIABLE`. :func:`castore.server.app.create_app` takes it whole.

Without that variable (a worker started by hand: ``uvicorn --factory
castore.server:app_from_environment``), the configuration is read from the variables
a user may set (:func:`from_user_variables`). A user's ``CASTORE_TOKEN_CACHE_SECONDS``
(README, "Access tokens") is read once, into the configuration, in both cases.

Process plumbing is not configuration and stays apart: the early ``/version`` answers go
to each worker in memory (:class:`castore.server.serving.PerWorkerApp`), and the live
migration's lock file goes by its inherited descriptor (``CASTORE_MIGRATE_LOCK_FD``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .hosts import LOCAL_NAMES
from .tokens import DEFAULT_CACHE_SECONDS
from .upload import UploadLimits

if TYPE_CHECKING:  # imported when a migration is configured: its client is not loaded otherwise
    from ..migration.live import MigrationLimits

__all__ = ["CONFIG_VARIABLE", "DEFAULT_HEADER_TIMEOUT", "VERIFY_FIRST", "ServerConfig", "from_user_variables",
           "server_config", "token_cache_seconds"]

CONFIG_VARIABLE = "CASTORE_SERVER_CONFIG"
"""The environment variable that carries a :class:`ServerConfig` to the workers (JSON)."""
DEFAULT_HEADER_TIMEOUT = 30.0
"""Seconds a client may take to send a request line and headers."""
VERIFY_FIRST = ("auto", "always", "never")
"""When a streamed response is verified whole before its headers are sent (:attr:`ServerConfig.verify_first`)."""


@dataclass(frozen=True)
class ServerConfig:
    """What a server serves and how (``castore serve``'s options); the defaults are a test app's."""

    root: str | None = None
    """The store's folder (absolute), or None for a store given by ``metadata`` and ``blobs`` URLs."""
    metadata: str | None = None
    blobs: str | None = None
    read_only: bool = False
    """Serve reads only: PUT and DELETE answer 403, and the store is never changed."""
    prefix: str = ""
    """URL prefix the app is mounted below (e.g. ``/ft``)."""
    fallback_url: str | None = None
    """An old server that GET and HEAD of a missing file are redirected to."""
    gzip: bool = False
    """Compress compressible large files on the fly for clients that accept gzip but not zstd."""
    verify_first: str = "auto"
    """One of :data:`VERIFY_FIRST` (see :func:`castore.server.app.create_app`)."""
    limits: UploadLimits = field(default_factory=UploadLimits)
    """What one upload may cost (timeouts, sizes, zstd window)."""
    spool_dir: str | None = None
    """Where bodies too large to keep in memory wait while they arrive (None: the system's
    temporary folder); the workers of ``castore serve`` use the store's folder."""
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    """Seconds a connection may take to send a request line and headers (then 408)."""
    allowed_hosts: tuple[str, ...] = ("*",)
    """The ``Host`` values answered (:mod:`castore.server.hosts`); ``("*",)``: any."""
    token_cache_seconds: float = DEFAULT_CACHE_SECONDS
    """How soon a new or revoked access token takes effect on every worker."""
    migrate_from: str | None = None
    """An old Filetracker server whose files move in on a miss (:mod:`castore.migration.live`)."""
    migration_limits: MigrationLimits | None = None
    """What calls to ``migrate_from`` may cost (None: the defaults)."""
    compact_when_idle: bool = False
    """Compact in slices while no request comes (:mod:`castore.server.idle`); off by default."""
    compact_idle: float = 60.0
    """Seconds without a request before a compaction slice starts."""
    compact_cpu: float = 0.5
    """The share of one core a compaction slice may use (above 0, at most 1)."""

    def __post_init__(self) -> None:
        if self.verify_first not in VERIFY_FIRST:
            raise ValueError(f"verify_first must be one of {', '.join(VERIFY_FIRST)}, not {self.verify_first!r}")
        if not 0 < self.compact_cpu <= 1:
            raise ValueError(f"compact_cpu must be above 0 and at most 1, not {self.compact_cpu}")

    def to_json(self) -> str:
        """This configuration as :func:`server_config` reads it back."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        """The configuration :meth:`to_json` wrote."""
        data = json.loads(text)
        data["limits"] = UploadLimits(**data["limits"])
        data["allowed_hosts"] = tuple(data["allowed_hosts"])
        if data["migration_limits"] is not None:
            from ..migration.live import MigrationLimits

            data["migration_limits"] = MigrationLimits(**data["migration_limits"])
        return cls(**data)


def server_config(env: Mapping[str, str] = os.environ) -> ServerConfig:
    """This server's configuration: the one in :data:`CONFIG_VARIABLE`, else :func:`from_user_variables`."""
    text = env.get(CONFIG_VARIABLE)
    return _parsed(text) if text else from_user_variables(env)


@functools.lru_cache(maxsize=1)
def _parsed(text: str) -> ServerConfig:
    """Parsed once per process (the HTTP protocol asks for the header timeout on each connection)."""
    return ServerConfig.from_json(text)


def from_user_variables(env: Mapping[str, str]) -> ServerConfig:
    """A configuration from the variables a user may set for a worker started by hand: the store
    (``CASTORE_ROOT``, ``CASTORE_METADATA``, ``CASTORE_BLOBS``, as for the ``castore`` command),
    ``CASTORE_TOKEN_CACHE_SECONDS`` (default 5), ``CASTORE_VERIFY_FIRST`` (``auto``, ``always``
    or ``never``) and ``CASTORE_ALLOWED_HOSTS`` (comma-separated; unset or empty: the loopback names)."""
    return ServerConfig(
        root=env.get("CASTORE_ROOT") or None,
        metadata=env.get("CASTORE_METADATA") or None,
        blobs=env.get("CASTORE_BLOBS") or None,
        verify_first=env.get("CASTORE_VERIFY_FIRST", "auto"),
        allowed_hosts=tuple((env.get("CASTORE_ALLOWED_HOSTS") or ",".join(LOCAL_NAMES)).split(",")),
        token_cache_seconds=token_cache_seconds(env),
    )


def token_cache_seconds(env: Mapping[str, str]) -> float:
    """``CASTORE_TOKEN_CACHE_SECONDS``, a user's setting (README): how soon token changes take effect."""
    return float(env.get("CASTORE_TOKEN_CACHE_SECONDS") or DEFAULT_CACHE_SECONDS)
