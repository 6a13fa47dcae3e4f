"""PowerMTA accounting files: incremental reader, bounce classes, per-minute counters.

Knows nothing of SNMP; used by the check_pmta_* bounce, deferral and TLS plugins.
"""

from pmta_snmp.acct.bounce import BounceClass, categorize, classify
from pmta_snmp.acct.buckets import MinuteBuckets, Rate, epoch_minute, pair_key
from pmta_snmp.acct.reader import (
    AcctBatch,
    AcctReader,
    AcctRecord,
    AcctState,
    ParseResult,
    parse_records,
    parse_time,
    read_new_records,
)

__all__ = [
    "AcctBatch",
    "AcctReader",
    "AcctRecord",
    "AcctState",
    "BounceClass",
    "MinuteBuckets",
    "ParseResult",
    "Rate",
    "categorize",
    "classify",
    "epoch_minute",
    "pair_key",
    "parse_records",
    "parse_time",
    "read_new_records",
]
