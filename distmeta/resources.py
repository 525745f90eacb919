"""What this machine offers a process, and what it can reach (no other distmeta import)."""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its container's limit when lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB"


def connect_timeout() -> float:
    """Seconds to wait for a service (Ray, MLflow, the Jobs API) to accept a connection: $DISTMETA_CONNECT_TIMEOUT."""
    return float(os.environ.get("DISTMETA_CONNECT_TIMEOUT", "10"))


def unreachable(address: str) -> str | None:
    """Why nothing accepts a connection at ``address`` (HOST:PORT, or a URL), or None when something does."""
    parts = urllib.parse.urlsplit(address if "://" in address else "//" + address)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        return "not HOST:PORT"
    try:
        socket.create_connection((parts.hostname, port), timeout=connect_timeout()).close()
    except socket.timeout:
        return f"no answer within {connect_timeout():g} s (DISTMETA_CONNECT_TIMEOUT)"
    except OSError as err:
        return err.strerror or str(err)
    return None
