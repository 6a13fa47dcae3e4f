"""Reading the outcomes TOML files: the shipped defaults or an operator's copy, with errors
that name the file and the line (or key) at fault."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pmta_snmp.outcomes import OutcomesFileError

__all__ = ["OutcomesFileError", "default_text", "line_of", "read_toml"]


def default_text(name: str) -> str:
    """The shipped file `name` (package data next to this module)."""
    return resources.files(__package__ or "pmta_snmp.outcomes").joinpath(name).read_text(
        encoding="utf-8")


def read_toml(path: str | Path | None, default_name: str) -> tuple[str, str, dict[str, Any]]:
    """(label for messages, text, parsed document) of `path`, or of the shipped default."""
    if path is None:
        label, text = f"{default_name} (shipped default)", default_text(default_name)
    else:
        label = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise OutcomesFileError(f"{label}: cannot read: {reason}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise OutcomesFileError(f"{label}: not valid TOML: {exc}") from None
    return label, text, doc


def line_of(text: str, header: str, occurrence: int = 1) -> int | None:
    """The 1-based line of the `occurrence`-th table header `header` (`[a.b]`, `[[rule]]`)."""
    pattern = re.compile(r"^[ \t]*" + re.escape(header).replace(r"\.", r"[ \t]*\.[ \t]*")
                         + r"[ \t]*(?:#.*)?$", re.M)
    for n, m in enumerate(pattern.finditer(text), start=1):
        if n == occurrence:
            return text.count("\n", 0, m.start()) + 1
    return None
