"""PowerMTA accounting files, in four parts (each module says more):

* :mod:`~pmta_snmp.acct.columns` the layouts: column names and what their texts mean;
* :mod:`~pmta_snmp.acct.records` the record path: CSV rows (Python's ``csv``) and JSON lines
  into :class:`AcctRecord`;
* :mod:`~pmta_snmp.acct.tally` the same rows counted without building records, with the
  optional C scanner where it is built (same counts either way);
* :mod:`~pmta_snmp.acct.reader` following files across rotations (offsets in a state);

plus where the records since a time begin (:mod:`~pmta_snmp.acct.seek`, for a first run's
read-back), the bounce classes (:mod:`~pmta_snmp.acct.bounce`) and the per-minute window counters
(:mod:`~pmta_snmp.acct.buckets`). Knows nothing of SNMP; used by the check_pmta_* bounce,
deferral and TLS plugins.
"""

from pmta_snmp.acct.bounce import BounceClass, categorize, classify
from pmta_snmp.acct.buckets import MinuteBuckets, Rate, epoch_minute, pair_key
from pmta_snmp.acct.columns import parse_time
from pmta_snmp.acct.reader import AcctBatch, AcctReader, AcctState, read_new_records
from pmta_snmp.acct.records import AcctRecord, ParseResult, parse_records

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
