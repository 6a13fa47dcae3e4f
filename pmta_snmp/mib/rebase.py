"""Re-base PMTA-SNMP-MIB onto an operator's own IANA Private Enterprise Number.

The MIB text names the enterprise number in exactly one place, the `pmtaEnterprise`
definition; `render_mib` rewrites it. The agent takes the same number from its config
(`enterprise = N`) and passes it to `pmta_snmp.mib.layout`, so MIB and agent agree.
`pmta-snmp mib --enterprise N [--out DIR]` is the command that wraps `write_mib`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Final

from pmta_snmp.mib.layout import ENTERPRISE, base_oid

__all__ = ["MIB_FILE_NAME", "find_mib_source", "render_mib", "write_mib"]

MIB_FILE_NAME: Final = "PMTA-SNMP-MIB.txt"

_ENTERPRISE_DEF: Final = re.compile(
    r"^(pmtaEnterprise\s+OBJECT\s+IDENTIFIER\s*::=\s*\{\s*enterprises\s+)(\d+)(\s*\})",
    re.MULTILINE,
)


def find_mib_source() -> Path:
    """The shipped MIB text: the checkout's `mibs/`, else `<prefix>/share/snmp/mibs/`."""
    candidates = (
        Path(__file__).resolve().parents[2] / "mibs" / MIB_FILE_NAME,
        Path(sys.prefix) / "share" / "snmp" / "mibs" / MIB_FILE_NAME,
    )
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{MIB_FILE_NAME} not found in " + ", ".join(str(p.parent) for p in candidates)
    )


def render_mib(enterprise: int = ENTERPRISE, source: str | None = None) -> str:
    """The MIB text with its enterprise arc set to `enterprise` (1..4294967295).

    `source` is the MIB text to rewrite (default: the shipped file). Raises ValueError when
    the text does not define `pmtaEnterprise` exactly once.
    """
    base_oid(enterprise)  # validates the number the same way the agent does
    text = find_mib_source().read_text(encoding="utf-8") if source is None else source
    matches = _ENTERPRISE_DEF.findall(text)
    if len(matches) != 1:
        raise ValueError(f"expected one pmtaEnterprise definition, found {len(matches)}")
    return _ENTERPRISE_DEF.sub(lambda m: f"{m[1]}{enterprise}{m[3]}", text)


def write_mib(enterprise: int, out_dir: Path) -> Path:
    """Write the re-based MIB as `out_dir/PMTA-SNMP-MIB.txt` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MIB_FILE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_mib(enterprise), encoding="utf-8")
    tmp.replace(path)
    return path
