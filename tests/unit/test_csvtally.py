"""The C scanner pmta_snmp._csvtally on its own: keys, where it stops, argument checks.

Its counts are compared with the record path in test_acct_tally (every test there runs with
and without it); tests/reliability/test_csvtally_asan.py runs it under AddressSanitizer.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from pmta_snmp.acct import tally as tally_module
from tests.conftest import require_c_scanner

TEXT, ADDRESS, MINUTE = 0, 1, 2
LIMIT = 131072


@pytest.fixture(scope="module")
def c() -> ModuleType:
    module = require_c_scanner()
    assert isinstance(module, ModuleType)
    return module


# type,time,orig,rcpt,diag
KINDS = ((b"d", ((1, MINUTE), (2, ADDRESS), (3, TEXT))),
         (b"tq", ((1, MINUTE), (4, TEXT), (-1, TEXT), (-1, MINUTE))))


def scan(c: ModuleType, data: bytes, kinds: Any = KINDS, width: int = 5,
         limit: int = LIMIT) -> tuple[int, int, dict[bytes, int]]:
    counts: dict[bytes, int] = {}
    stop, lines = c.scan(data, 0, len(data), width, kinds, b"type", limit, counts)
    return stop, lines, counts


def test_module_constants_match_the_python_side(c: ModuleType) -> None:
    assert (c.TEXT, c.ADDRESS, c.MINUTE) == (tally_module._C_TEXT, tally_module._C_ADDRESS,
                                             tally_module._C_MINUTE) == (TEXT, ADDRESS, MINUTE)


def test_keys_of_each_mode(c: ModuleType) -> None:
    data = (b"d,2025-01-14 09:12:03+0100,a@b@Ex.ORG,r@x.y,diag\n"
            b"d,2025-01-14T09:12:59Z,\"q,u@Ex.ORG\",\"quoted, text\",diag\r\n"
            b"\n"
            b"tq,1736842323,,,\"diag\"\n"
            b"d,\"2025-01-14 09:12:03+0100\",no-at,,x\n"
            b"d,2025-01-14 09:12:60+0100,@,z,x\n"
            b"r,anything,at,all,here\n")
    stop, lines, counts = scan(c, data)
    assert (stop, lines) == (len(data), 7)
    assert counts == {
        b"d\xffI2025-01-14 09:12+0100\xff@Ex.ORG\xffr@x.y": 1,
        b"d\xffI2025-01-14T09:12Z\xff@Ex.ORG\xffquoted, text": 1,
        b"tq\xffR1736842323\xffdiag\xff\xffN": 1,
        b"d\xffR2025-01-14 09:12:03+0100\xff\xff": 1,  # quoted time: whole; no "@": ""
        b"d\xffR2025-01-14 09:12:60+0100\xff@\xffz": 1,  # second 60: not the ISO shape
    }
    # Doubled quotes in a captured field are one quote in the key, also from the last "@".
    doubled = (b'd,"2025-01-14 09:12:03+0100","a""b@c""d","say ""hi"", then ""bye""",x\n'
               b'd,2025-01-14 09:12:03+0100,"""@""","""",x\r\n')
    assert scan(c, doubled)[2] == {
        b'd\xffR2025-01-14 09:12:03+0100\xff@c"d\xffsay "hi", then "bye"': 1,
        b'd\xffI2025-01-14 09:12+0100\xff@"\xff"': 1,
    }
    # Counts add up in the given dict.
    again: dict[bytes, int] = {b"d\xffI2025-01-14 09:12+0100\xff@Ex.ORG\xffr@x.y": 5}
    c.scan(data, 0, len(data), 5, KINDS, b"type", LIMIT, again)
    assert again[b"d\xffI2025-01-14 09:12+0100\xff@Ex.ORG\xffr@x.y"] == 6


GOOD = b"d,2025-01-14 09:12:03+0100,a@b.c,r,x\n"


@pytest.mark.parametrize("line", [
    b"d,t,o,r\n",  # too few fields
    b"d,t,o,r,x,y\n",  # too many
    b'd,t,"o""q,r,x\n',  # "" and then no closing quote on the line
    b'd,t,"o"""x,r,x\n',  # text after the closing quote that follows a pair
    b'd,t,"o"x,r,x\n',  # text after the closing quote
    b'd,t,"o\n',  # a quoted field going on over the line end
    b"d,t,o\r,r,x\n",  # a carriage return inside a field
    b"d,t,o,r,x\r\r\n",
    b"\r\n",
    b'"d",t,o,r,x\n',  # a quoted type
    b"Type,t,o,r,x\n",  # maybe a header
    b"xTYPEx,t,o,r,x\n",
    b"d,t,\xc3\xa9,r,x\n",  # not ASCII
    b"d,t,o,r,x",  # no line end
    b"d,t,o,r," + b"x" * (LIMIT + 1) + b"\n",  # over csv's field size limit
    b'd,t,o,r,"' + b"x" * (LIMIT + 1) + b'"\n',
])
def test_stops_at_a_line_that_is_not_simple(c: ModuleType, line: bytes) -> None:
    data = GOOD + GOOD + line + GOOD
    stop, lines, counts = scan(c, data)
    assert (stop, lines) == (2 * len(GOOD), 2)
    assert sum(counts.values()) == 2


@pytest.mark.parametrize("line", [
    b"d,t,o,r," + b"x" * LIMIT + b"\n",
    b'd,t,o,r,"' + b"x" * LIMIT + b'"\n',
    b"d,t,o,r,x\x00y\n",  # NUL is a character like another for csv
    b'd,t,"o""q",r,x\n',  # "" inside quotes: one quote
    b'd,t,o"q,r,x"\n',  # a quote inside an unquoted field is literal
    b"d,,,,\n",
    b"zz,t,o,r,x\r\n",  # another type: checked, not counted
])
def test_simple_lines(c: ModuleType, line: bytes) -> None:
    data = GOOD + line
    stop, lines, counts = scan(c, data)
    assert (stop, lines) == (len(data), 2)
    assert sum(counts.values()) == (2 if line.startswith(b"d,") else 1)


def test_starts_and_stops_within_the_buffer(c: ModuleType) -> None:
    data = b"junk\n" + GOOD * 3 + b"tail"
    counts: dict[bytes, int] = {}
    stop, lines = c.scan(data, 5, 5 + 2 * len(GOOD), 5, KINDS, b"type", LIMIT, counts)
    assert (stop, lines, sum(counts.values())) == (5 + 2 * len(GOOD), 2, 2)
    assert c.scan(data, 7, 7, 5, KINDS, b"type", LIMIT, counts) == (7, 0)
    view = memoryview(data)
    assert c.scan(view, 5, 5 + len(GOOD), 5, KINDS, b"type", LIMIT, counts)[1] == 1


@pytest.mark.parametrize(("args", "error"), [
    ((b"x\n", -1, 2), "within the buffer"),
    ((b"x\n", 0, 3), "within the buffer"),
    ((b"x\n", 2, 1), "within the buffer"),
])
def test_bad_ranges(c: ModuleType, args: tuple[bytes, int, int], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        c.scan(*args, 5, KINDS, b"type", LIMIT, {})


@pytest.mark.parametrize(("width", "kinds", "error"), [
    (0, KINDS, "width"),
    (5000, KINDS, "width"),
    (5, [(b"d", ())], "kinds"),
    (5, tuple((b"k%d" % i, ()) for i in range(17)), "kinds"),
    (5, ((b"d", ((0, TEXT),)),), "column"),
    (5, ((b"d", ((5, TEXT),)),), "column"),
    (5, ((b"d", ((-2, TEXT),)),), "column"),
    (5, ((b"d", ((1, 9),)),), "mode"),
    (5, ((b"d", ((1, 5), (2, 6))),), "DELAY"),  # DELAY without DELAY_START
    (5, ((b"d", ((1, 6), (2, 5), (3, 7))),), "DELAY"),  # out of order
    (5, ((b"d", tuple((1, TEXT) for _ in range(65))),), "64"),
])
def test_bad_plans(c: ModuleType, width: int, kinds: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        c.scan(GOOD, 0, len(GOOD), width, kinds, b"type", LIMIT, {})


def test_bad_argument_types(c: ModuleType) -> None:
    with pytest.raises(TypeError):
        c.scan("text", 0, 1, 5, KINDS, b"type", LIMIT, {})
    with pytest.raises(TypeError):
        c.scan(GOOD, 0, len(GOOD), 5, KINDS, b"type", LIMIT, [])
    with pytest.raises(TypeError):
        c.scan(GOOD, 0, len(GOOD), 5, ((b"d", ((1, "x"),)),), b"type", LIMIT, {})
    with pytest.raises(TypeError):
        c.scan(GOOD, 0, len(GOOD), 5, (("d", ()),), b"type", LIMIT, {})
    # A count that is not an int in the dict the caller passed.
    counts: dict[bytes, Any] = {b"d\xffI2025-01-14 09:12+0100\xff@b.c\xffr": "x"}
    with pytest.raises(TypeError):
        c.scan(GOOD, 0, len(GOOD), 5, KINDS, b"type", LIMIT, counts)
