"""PowerMTA HTTP management API: client, parser and errors (no SNMP in here)."""

from pmta_snmp.api.client import AsyncPmtaClient, ClientConfig, PmtaClient, load_api_key
from pmta_snmp.api.errors import (
    PmtaError,
    PmtaForbidden,
    PmtaHTTPError,
    PmtaMalformed,
    PmtaTimeout,
    PmtaUnreachable,
)

__all__ = [
    "AsyncPmtaClient",
    "ClientConfig",
    "PmtaClient",
    "PmtaError",
    "PmtaForbidden",
    "PmtaHTTPError",
    "PmtaMalformed",
    "PmtaTimeout",
    "PmtaUnreachable",
    "load_api_key",
]
