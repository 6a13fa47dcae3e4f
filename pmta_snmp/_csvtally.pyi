"""The optional C scanner of pmta_snmp.acct.tally (see _csvtally.c)."""

TEXT: int
ADDRESS: int
MINUTE: int

def scan(buf: bytes, pos: int, end: int, width: int,
         kinds: tuple[tuple[bytes, tuple[tuple[int, int], ...]], ...], header_word: bytes,
         limit: int, counts: dict[bytes, int], /) -> tuple[int, int]: ...
