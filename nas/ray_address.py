"""Which Ray cluster a run joins: `--address` / `RAY_ADDRESS` resolved as Ray does, then probed.

Why its own module: it is the one part of the executor that needs no Ray and no task, only the
address rules and a TCP connect, so a wrong address is one line in seconds instead of minutes of
Ray's retries (`nas.executor.RayExecutor.start` calls it; tests call it with a fake environment).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PROBE_TIMEOUT_S", "RAY_ADDRESS_ENV", "resolve_ray_address"]

#: Ray's own variable: the cluster to join when no address is passed.
RAY_ADDRESS_ENV = "RAY_ADDRESS"
#: Seconds the TCP probe of a cluster address may take (a live head answers in milliseconds).
PROBE_TIMEOUT_S = 3.0


def _split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT`, `[IPv6]:PORT` or `ray://HOST:PORT`; None when it is not one."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _ray_address_file() -> Path:
    """Where `ray start` records the cluster it started on this machine (what Ray's `auto` reads)."""
    try:
        from ray._common.utils import get_ray_address_file

        return Path(get_ray_address_file(None))
    except ImportError:  # another Ray layout: the same rule, spelled out
        root = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        return Path(root) / "ray" / "ray_current_cluster"


def resolve_ray_address(address: str | None, *, environ: Mapping[str, str] | None = None,
                        probe_timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str | None, str]:
    """The cluster to join, as Ray resolves it, probed: (address or None for a private local Ray, where it came from).

    `address` (--address) wins; without it `RAY_ADDRESS` decides. `auto` is the cluster `ray start`
    recorded on this machine (Ray's address file; RAY_ADDRESS, when set, wins over `--address auto` as
    in `ray.init`), `local` a private instance. Unlike Ray's `auto` this never picks some other Ray
    process found running here: that may be another run's throw-away instance. Raises `UserError`
    when the address is malformed or nothing listens there, naming the address and the fix."""
    from search_space.errors import UserError

    env = (os.environ if environ is None else environ).get(RAY_ADDRESS_ENV, "").strip()
    if address:
        given, source = address.strip(), f"--address {address}"
        drop = "drop --address"
        if given == "auto" and env and env != "auto":
            given, source = env, f"--address auto, {RAY_ADDRESS_ENV}={env}"
            drop = f"unset {RAY_ADDRESS_ENV} and drop --address"
    elif env:
        given, source, drop = env, f"{RAY_ADDRESS_ENV}={env}", f"unset {RAY_ADDRESS_ENV}"
    else:
        return None, "local"
    if given == "local":
        return None, f"local ({source})"
    if given == "auto":
        path = _ray_address_file()
        recorded = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        if not recorded:
            raise UserError(f"{source}: no Ray cluster was started with `ray start` on this machine (no address in "
                            f"{path}); start the head with `ray start --head`, pass its HOST:PORT, or {drop} to run locally")
        given, source = recorded, f"{source}: the cluster `ray start` recorded in {path}"
    parsed = _split_address(given)
    if parsed is None:
        raise UserError(f"{source}: {given!r} is not a Ray address; use HOST:PORT of the head (e.g. 10.0.0.5:6379), "
                        f"`auto` (the cluster `ray start` started on this machine) or `local`")
    try:
        with socket.create_connection(parsed, timeout=probe_timeout_s):
            pass
    except OSError as exc:
        raise UserError(f"{source}: no Ray cluster answers at {given} ({exc.strerror or type(exc).__name__}); start the "
                        f"head with `ray start --head --port PORT`, check the host and port, or {drop} to run locally") from None
    return given, source
