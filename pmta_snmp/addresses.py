"""One text per IP address, however PowerMTA or a user wrote it (a light module: the plugins
import it at start-up)."""

from __future__ import annotations

import ipaddress

__all__ = ["source_ip_text"]


def source_ip_text(text: str) -> str:
    """An address's one text (``2001:db8::1`` for ``2001:DB8::1``, ``[2001:0db8::1]``): one
    series, one SNMP row and one match for --source-ip however PowerMTA wrote it; a text
    that is no IP is only stripped."""
    text = text.strip()
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped and ip.scope_id is None:
        # ::ffff:198.51.100.2 as written, on every Python (3.11 says ::ffff:c633:6402).
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)
