"""CIDR sets for IP rules and WAF conditions, compiled once and matched at request speed.

A set keeps, per address family and per prefix length in use, a ``set`` of network numbers
(``int(address) >> (bits - prefixlen)``). Matching an address costs one parse (memoised: a client
sends many requests) plus one shift and one set lookup per distinct prefix length, usually a
handful. That beats a radix tree written in Python and needs no extra package.

IPv4-mapped IPv6 client addresses (``::ffff:192.0.2.1``, seen on dual-stack listeners) are matched
as the IPv4 address they carry.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable


@functools.lru_cache(maxsize=8192)
def parse_ip(text: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an address, or None when it is not one."""
    try:
        addr = ipaddress.ip_address(text.partition("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


class CidrSet:
    __slots__ = ("_v4", "_v6", "empty")

    def __init__(self, networks: Iterable[str]):
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for text in networks:
            net = ipaddress.ip_network(text.strip(), strict=False)
            if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
                net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
            table, bits = (v4, 32) if net.version == 4 else (v6, 128)
            table.setdefault(net.prefixlen, set()).add(int(net.network_address) >> (bits - net.prefixlen))
        # Longest prefixes first does not matter for a yes/no answer; fewest lookups does: tuples.
        self._v4 = tuple((32 - plen, frozenset(nums)) for plen, nums in v4.items())
        self._v6 = tuple((128 - plen, frozenset(nums)) for plen, nums in v6.items())
        self.empty = not v4 and not v6

    def __contains__(self, ip: str) -> bool:
        parsed = parse_ip(ip)
        if parsed is None:
            return False
        version, number = parsed
        for shift, nums in self._v4 if version == 4 else self._v6:
            if number >> shift in nums:
                return True
        return False


class CidrMap:
    """Networks carrying payloads: ``lookup(ip)`` gives the payloads of every network holding it."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, entries: Iterable[tuple[str, int]]):
        v4: dict[int, dict[int, list[int]]] = {}
        v6: dict[int, dict[int, list[int]]] = {}
        for text, payload in entries:
            net = ipaddress.ip_network(text.strip(), strict=False)
            if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
                net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
            table, bits = (v4, 32) if net.version == 4 else (v6, 128)
            num = int(net.network_address) >> (bits - net.prefixlen)
            table.setdefault(net.prefixlen, {}).setdefault(num, []).append(payload)
        self._v4 = tuple((32 - plen, nums) for plen, nums in v4.items())
        self._v6 = tuple((128 - plen, nums) for plen, nums in v6.items())

    def lookup(self, ip: str) -> list[int]:
        parsed = parse_ip(ip)
        if parsed is None:
            return []
        version, number = parsed
        found: list[int] = []
        for shift, nums in self._v4 if version == 4 else self._v6:
            hit = nums.get(number >> shift)
            if hit:
                found += hit
        return found
