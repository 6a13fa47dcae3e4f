"""The C scanner (pmta_snmp/_csvtally.c) under AddressSanitizer and UndefinedBehaviorSanitizer.

The module is compiled again here with ``-fsanitize=address,undefined`` and driven in a child
Python (libasan preloaded, PYTHONMALLOC=malloc so that every bytes object is a malloc block
with red zones) by a bounded random run: buffers built from the characters that matter to
csv, random ranges (also outside the buffer), widths, plans and limits. Any invalid read or
write, or undefined behaviour, ends the child with a sanitizer report. A positive control
builds a copy that writes past the end of a key and checks that the same run catches it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT as REPO
from tests.conftest import missing_requirement

SOURCE = REPO / "pmta_snmp" / "_csvtally.c"
CASES = 30_000

DRIVER = textwrap.dedent("""
    import random, sys
    sys.path.insert(0, sys.argv[1])
    import _csvtally as c

    PIECES = [b"", b"d", b"b", b"tq", b"x", b"@", b"a@B.org", b",", b",,", b'"', b'""', b"\\r",
              b"\\n", b"\\r\\n", b" ", b"\\x00", b"\\xe9", b"\\xff", b"type", b"TYPE",
              b"2025-01-14 09:12:03+0100", b"2025-01-14T09:12:5", b"2025-01-14 09:1"]
    SAFE = [b"", b"x", b"@", b"a@B.org", b"2025-01-14 09:12:03+0100", b"2025-01-14T09:12:59",
            b" ", b"\\x00", b"1736842323", b"17", b"+01:00", b"Z", b"2024-02-29 23:59:59-2359",
            b"<", b"(", b"0000-00-00 00:00:00+0000", b"99999999999999999"]
    rng = random.Random(int(sys.argv[2]))
    ran = errors = counted = 0
    for _ in range(int(sys.argv[3])):
        width = rng.choice([1, 2, 3, 5, 8, rng.randrange(0, 20)])
        x = rng.random()
        if x < 0.1:
            buf = rng.randbytes(rng.randrange(0, 200))
        elif x < 0.3:
            buf = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 60)))
        else:  # lines of about the width, with random pieces in the fields
            lines = []
            for _ in range(rng.randrange(0, 8)):
                # Mostly simple lines (the scan counts up to the first line that is not).
                fields = [rng.choice([b"d", b"b", b"tq", b"x"] * 8 + [b'"d"', b"Type"])]
                for _ in range(max(0, width - 1 + rng.choice([0] * 18 + [-1, 1]))):
                    field = b"".join(rng.choice(SAFE if rng.random() < 0.9 else PIECES)
                                     for _ in range(rng.randrange(3)))
                    fields.append(b'"' + field + b'"' if rng.random() < 0.2 else field)
                lines.append(b",".join(fields) + rng.choice([b"\\n", b"\\r\\n"] * 9 + [b""]))
            buf = b"".join(lines)
        buf = bytes(buf)  # its own malloc block: ASan sees its exact end
        def column():
            return rng.choice([-1, *range(1, max(width, 2))])

        def columns():
            cols = [(column(), rng.randrange(0, 5)) for _ in range(rng.randrange(0, 5))]
            if rng.random() < 0.4:  # a delay: DELAY, DELAY_END, DELAY_START in a row
                at = rng.randrange(len(cols) + 1)
                cols[at:at] = [(column(), 5), (column(), 6), (column(), 7)]
            if rng.random() < 0.05:
                cols.append((column(), rng.randrange(0, 9)))  # maybe out of order or range
            return tuple(cols)

        kinds = tuple((rng.choice([b"d", b"b", b"tq", b"", b"type"]), columns())
                      for _ in range(rng.randrange(0, 4)))
        bounds = tuple(rng.choice([0.5, 1.0, 60.0, 86400.0]) for _ in range(rng.randrange(0, 12)))
        pos = rng.choice([0, 0, rng.randrange(-2, len(buf) + 3)])
        end = rng.choice([len(buf), len(buf), rng.randrange(-2, len(buf) + 3)])
        limit = 131072 if rng.random() < 0.9 else rng.randrange(0, 30)
        counts = {}
        sums = {} if rng.random() < 0.95 else None
        try:
            stop, lines = c.scan(buf, pos, end, width, kinds, b"type", limit, counts,
                                 sums, bounds)
        except (ValueError, TypeError):
            errors += 1
        else:
            assert pos <= stop <= end, (pos, stop, end)
            counted += sum(counts.values())
        ran += 1
    print(ran, errors, counted)
""")


def _compile(source: Path, out_dir: Path) -> Path:
    out_dir.mkdir()
    target = out_dir / f"_csvtally{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(
        ["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined", "-shared", "-fPIC",
         f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(target)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return out_dir


def _run(libasan: str, module_dir: Path, seed: int, cases: int
         ) -> subprocess.CompletedProcess[str]:
    env = {
        "LD_PRELOAD": libasan,
        "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run([sys.executable, "-c", DRIVER, str(module_dir), str(seed), str(cases)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def libasan() -> str:
    """The path of gcc's AddressSanitizer runtime, to preload into the child Python."""
    if shutil.which("gcc") is None:
        missing_requirement("gcc is not installed (Debian package gcc)")
    path = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                          text=True, check=False).stdout.strip()
    if not Path(path).is_file():
        missing_requirement("gcc has no libasan (Debian: libasan of gcc, with gcc)")
    return path


@pytest.mark.slow
@pytest.mark.timeout(300)  # hang detection: about 10 s (the build included)
def test_random_inputs_under_sanitizers(libasan: str, tmp_path: Path) -> None:
    module_dir = _compile(SOURCE, tmp_path / "asan")
    res = _run(libasan, module_dir, seed=2741, cases=CASES)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Sanitizer" not in res.stderr, res.stderr[-4000:]
    ran, errors, counted = map(int, res.stdout.split())
    assert ran == CASES
    # The run reaches both the argument checks and the counting.
    assert 0 < errors < CASES and counted > 1000


def test_the_sanitized_run_catches_a_write_past_the_key(libasan: str, tmp_path: Path
                                                         ) -> None:
    """Positive control: a copy whose key of an ISO time writes 8 bytes past its end."""
    text = SOURCE.read_text()
    bug = "memcpy(w + 16, piece->p + 19, (size_t)(piece->n - 19));"
    assert bug in text
    broken = tmp_path / "_csvtally.c"
    broken.write_text(text.replace(bug, bug.replace("19));", "19) + 8);"), 1))
    module_dir = _compile(broken, tmp_path / "broken")
    res = _run(libasan, module_dir, seed=1, cases=2000)
    assert res.returncode == 86, (res.returncode, res.stderr[-2000:])
    assert "AddressSanitizer" in res.stderr and "overflow" in res.stderr
