"""How much memory a device has: sizes that cannot fit are refused before any work starts.

An accelerator reports its own limit (``memory_stats()["bytes_limit"]``); CPU devices share the
host's physical memory, so each gets its share. The figures are what is there at best: a
request over them cannot succeed, and is refused in one line instead of hanging in the
allocator or meeting the out-of-memory killer.
"""

from __future__ import annotations

import os

import jax

GIB = 2**30


def host_bytes() -> int:
    """The host's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_bytes(device: jax.Device) -> int:
    """The bytes one device can hold: an accelerator's limit, or a CPU device's share of the
    host's memory (shared by this process's CPU devices)."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return host_bytes() // max(1, len(jax.local_devices(backend=device.platform)))


def gib(size: float) -> str:
    """``size`` bytes in GiB, for messages ("12.5 GiB")."""
    return f"{size / GIB:,.1f} GiB"
