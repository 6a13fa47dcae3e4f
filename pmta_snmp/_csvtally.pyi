"""The optional C scanner of pmta_snmp.acct.tally (see _csvtally.c)."""

TEXT: int
ADDRESS: int
MINUTE: int
MASK: int
HOST: int
DELAY: int
DELAY_END: int
DELAY_START: int
MINUTE10: int

def scan(buf: bytes, pos: int, end: int, width: int,
         kinds: tuple[tuple[bytes, tuple[tuple[int, int], ...]], ...], header_word: bytes,
         limit: int, counts: dict[bytes, int], sums: dict[bytes, int] | None = ...,
         bounds: tuple[float, ...] = ..., /) -> tuple[int, int]: ...
