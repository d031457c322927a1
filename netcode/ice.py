"""Which local addresses aiortc gathers host ICE candidates on.

aioice gathers on every interface address except loopback (`aioice.ice.get_host_addresses` skips
127.0.0.1 and ::1). A relay worker should offer the address clients can reach (`--webrtc-ip`), and
tests and benchmarks, where everything runs on 127.0.0.1 or in a network namespace, need loopback.
"""

from __future__ import annotations

from collections.abc import Sequence


def use_host_addresses(ips: Sequence[str]) -> None:
    """Gather host candidates on `ips` only, in this process."""
    import aioice.ice

    chosen = list(ips)

    def host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return list(chosen)

    aioice.ice.get_host_addresses = host_addresses
