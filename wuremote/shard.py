"""`--shard K/N`: a deterministic slice of the hosts, for CI matrix jobs.

A host's shard comes from a hash of its name, not its position, so adding or removing a
host never moves the others between shards; every host is in exactly one of the N.
"""

from __future__ import annotations

import hashlib

from .inventory import HostConfig


def shard_of(name: str, count: int) -> int:
    """1-based shard of a host name among ``count`` shards."""
    digest = hashlib.sha256(name.lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def shard(hosts: list[HostConfig], index: int, count: int) -> list[HostConfig]:
    return [host for host in hosts if shard_of(host.name, count) == index]
