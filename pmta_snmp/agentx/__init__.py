"""Generic AgentX (RFC 2741) subagent: codec, request handlers and asyncio session.

Knows nothing about PowerMTA: it serves whatever `OidTree` it is given.
"""

from pmta_snmp.agentx.codec import (
    AgentXEncodeError,
    AgentXParseError,
    CloseReason,
    ErrorCode,
    Pdu,
    PduType,
    SearchRange,
    VarBind,
    decode_packet,
)
from pmta_snmp.agentx.handlers import RequestHandler, uptime_since
from pmta_snmp.agentx.session import (
    DEFAULT_ADDRESS,
    AgentXConnectionLost,
    AgentXError,
    AgentXNotConnected,
    AgentXResponseError,
    AgentXSession,
    AgentXTimeout,
    Registration,
    SessionStatus,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "AgentXConnectionLost",
    "AgentXEncodeError",
    "AgentXError",
    "AgentXNotConnected",
    "AgentXParseError",
    "AgentXResponseError",
    "AgentXSession",
    "AgentXTimeout",
    "CloseReason",
    "ErrorCode",
    "Pdu",
    "PduType",
    "Registration",
    "RequestHandler",
    "SearchRange",
    "SessionStatus",
    "VarBind",
    "decode_packet",
    "uptime_since",
]
