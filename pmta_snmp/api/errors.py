"""Errors of the PowerMTA API client, each with a message a person can act on.

Messages never contain the API key. Plugins print `str(error)` as their status line.
"""

from __future__ import annotations


class PmtaError(Exception):
    """Any failure to obtain or understand PowerMTA's state."""


class PmtaUnreachable(PmtaError):
    """Nothing answered at the URL (refused, no route, DNS, TLS handshake)."""


class PmtaTimeout(PmtaError):
    """PowerMTA did not answer within the configured timeout."""


class PmtaForbidden(PmtaError):
    """PowerMTA refused access (HTTP 401/403)."""


class PmtaHTTPError(PmtaError):
    """PowerMTA answered with an unexpected HTTP status."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class PmtaMalformed(PmtaError):
    """The answer arrived but is not a PowerMTA envelope we understand."""


FORBIDDEN_HINT = (
    "allow this host with `http-access <ip>/32 monitor` in PowerMTA's config "
    "(restart pmtahttp after the change) or send an API key (`http-api-key`) "
    "via --api-key-file or PMTA_API_KEY"
)


def excerpt(body: bytes | str, limit: int = 80) -> str:
    """A short, printable excerpt of a payload for error messages (one line, quoted).

    Only the start of the payload is decoded: an answer can be hundreds of megabytes.
    """
    head = body[: limit * 4 + 4]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    text = " ".join(text.split())
    more = len(body) > len(head)
    if not text:
        return f"(blank start of a {len(body)}-byte body)" if more else "(empty body)"
    more = more or len(text) > limit
    return repr(text[:limit] + ("..." if more else ""))


def redact_url(url: str) -> str:
    """`url` with its user information (`user:password@`) replaced by `***@`: credentials
    given in `--url` never reach a message, a log line or an SNMP object."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            end = min(end, at)
    netloc = rest[:end]
    if "@" not in netloc:
        return url
    return f"{scheme}://***@{netloc.rpartition('@')[2]}{rest[end:]}"
