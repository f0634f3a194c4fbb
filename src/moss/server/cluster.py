"""Roles and timings of a store in cluster mode (a catalog shared by several nodes).

Kept in one place so the store, ``moss serve --help`` and docs/deployment.md agree on them.
Each timing can be set per store (tests use a one-second lease) or through the environment
(``MOSS_LEASE_TTL_S``, ``MOSS_HEARTBEAT_S``, ``MOSS_GC_GRACE_S``, ``MOSS_ORPHAN_AGE_S``,
``MOSS_ORPHAN_SWEEP_S``), which is
how a ``moss serve`` process is configured without more flags.
"""

from __future__ import annotations

import os

from ..errors import InvalidArgumentError

__all__ = ["CLUSTER", "ROLES", "setting"]

ROLES = ("all", "api", "worker")
"""``all``: API and jobs (default); ``api``: requests and uploads only; ``worker``: jobs only."""

CLUSTER = {
    "lease_ttl_s": 10.0,
    "heartbeat_s": 2.0,
    "gc_grace_s": 120.0,
    "orphan_age_s": 3600.0,
    "orphan_sweep_s": 300.0,
}
"""Cluster-mode defaults in seconds: a dead node's running job is failed one lease TTL after its
last heartbeat; a superseded version is deleted ``gc_grace_s`` after it was superseded (a
download on another node may still be reading it); the orphan sweep skips younger blobs (another
node may be between writing one and registering it), and runs on each node once per
``orphan_sweep_s``: it lists the whole bucket, which every node's 2-second maintenance pass could
not afford on a large one."""


def setting(name: str, given: float | None, cluster: bool) -> float:
    """The value of timing ``name``: ``given``, else (cluster mode) ``MOSS_<NAME>`` or the
    default in :data:`CLUSTER`; a single-directory store uses 0 (collect at once, sweep every
    orphan, file-lock liveness).

    Raises:
        InvalidArgumentError: the environment variable is not a non-negative number.
    """
    if given is not None:
        return float(given)
    if not cluster:
        return 0.0
    env = "MOSS_" + name.upper()
    raw = os.environ.get(env)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise InvalidArgumentError(f"{env} must be a number of seconds, not {raw!r}") from None
        if not value >= 0:
            raise InvalidArgumentError(f"{env} must be a non-negative number of seconds")
        return value
    return CLUSTER[name]
