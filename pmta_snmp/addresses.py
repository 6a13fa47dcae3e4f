"""One text per IP address, however PowerMTA or a user wrote it, and its packed form for the
MIB's InetAddress indices (a light module: the plugins import it at start-up)."""

from __future__ import annotations

import ipaddress

__all__ = ["packed_address", "source_ip_text", "zone_index"]

_MAX_ZONE = 2**32 - 1


def source_ip_text(text: str) -> str:
    """An address's one text (``2001:db8::1`` for ``2001:DB8::1``, ``[2001:0db8::1]``): one
    series, one SNMP row and one match for --source-ip however PowerMTA wrote it; a text
    that is no IP is only stripped. A zone stays as written (``fe80::1%eth0``)."""
    text = text.strip()
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped and ip.scope_id is None:
        # ::ffff:198.51.100.2 as written, on every Python (3.11 says ::ffff:c633:6402).
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def zone_index(zone: str) -> int | None:
    """The number of an IPv6 zone (RFC 4007 §11, RFC 4001's InetZoneIndex): the index of the
    interface of that name on this host, else the zone written as a number; None when it is
    neither (an interface this host does not have: its number here would be made up)."""
    import socket  # only for zoned addresses: 2.7 ms of a plugin's start-up otherwise

    try:
        return socket.if_nametoindex(zone)
    except (OSError, ValueError):
        pass
    if zone.isascii() and zone.isdigit() and int(zone) <= _MAX_ZONE:
        return int(zone)
    return None


def packed_address(text: str) -> tuple[int, bytes]:
    """(4 or 6, the address in network byte order) of an IP text; (0, b"") when it is no IP
    (``(other)``, ""). The MIB maps 4 -> ipv4(1), 6 -> ipv6(2) or, with 20 octets, ipv6z(4),
    0 -> unknown(0).

    A zoned IPv6 address (``fe80::1%eth0``) packs as RFC 4001's InetAddressIPv6z: the 16
    octets, then the zone index in 4 octets (20 in all), so that one address on two links
    is two addresses. PowerMTA's documentation does not say whether ``dlvSourceIp`` can carry
    a zone (a link-local source address on a local link), and ``repSourceIp`` is what a
    feedback report says: such texts are taken, not assumed away. A zone this host cannot
    number gives (0, b""): no index is better than a wrong one."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return 0, b""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        zone = zone_index(ip.scope_id)
        if zone is None:
            return 0, b""
        return 6, ip.packed + zone.to_bytes(4, "big")
    return ip.version, ip.packed
