"""Stress the rotation-following readers: runs back to back while a writer rotates the file
every ~0.1 s, with small random delays injected around the readers' looks at the directory.

`python -m bench.stress_rotation [--readers tail,acct,glob] [--seeds 1-4] [--jitter S] ...`

Readers: `tail` (TailReader on a log, as check_pmta_log), `acct` (AcctReader on one path, as
`check_pmta_bounce --acct-file FILE`), `glob` and `globz` (AcctReader on `acct*.csv` and on
`acct*.csv*`, MultiTailReader, as `--acct-file 'dir/acct*.csv'` and the outcomes engine's
`[accounting] files`); the
accounting runs count records by the record path or the tally (the plugins' path), at random.
The writer (tests/reliability/_files.py) numbers every line and record; after the last run
each number must have been read exactly once. A number missed is *reported* when a run whose
window covers it said so (TailReader's `lost`, AcctReader's warning), else *silent*: a bug,
as is any number read twice. Reported losses are acceptable only under extreme delays.

Bounded: `--seeds` and `--rotations` per seed (and `--max-seconds` per seed as a hang bound).
Exit 1 when any seed lost or repeated a record silently. Not part of `python -m bench`: it
prints counts, not ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmta_snmp import logtail
from pmta_snmp.acct import reader as acct_reader
from pmta_snmp.acct.reader import AcctReader, AcctState
from pmta_snmp.acct.tally import TallySpec
from pmta_snmp.logtail import TailReader, TailState
from tests.reliability._files import ACCT_HEADER, AcctTruth, Churn, LogTruth, RotatingFile

KINDS = {
    "numbered": ["rename", "copytruncate", "compress", "delaycompress"],
    "dated": ["dated", "dated-gz"],
    "dated-plain": ["dated"],
}
#: Default kinds per reader. A glob takes in PowerMTA's dated names only, so it is stressed
#: with those (numbered rotations would leave it: a configuration error). `acct*.csv` follows
#: a file compressed after a run read it, but a file made and compressed between two runs is
#: no file of it; `acct*.csv*` (`globz`) takes in the compressed files too.
DEFAULT_KINDS = {"tail": "numbered", "acct": "numbered,dated", "glob": "dated-plain",
                 "globz": "dated"}
GLOBS = {"glob": "acct*.csv", "globz": "acct*.csv*"}
LOG_NUMBER = re.compile(rb" (\d+)$")
RCPT_NUMBER = re.compile(r"u(\d+)@")
#: What AcctReader's warning says when records may have been missed.
LOST_NOTE = "not found after rotation"


@dataclass
class Run:
    """One run: what it read, and whether it said lines may have been missed."""

    numbers: list[int]
    lost: bool
    frontier: int  # the highest number read by the runs before this one
    written: int  # numbers written when this run ended
    malformed: int = 0  # accounting rows the run skipped as malformed
    warnings: list[str] = field(default_factory=list)  # what the accounting reader said


@dataclass
class Outcome:
    """One seed's result."""

    written: int
    runs: list[Run] = field(default_factory=list)
    rotations: dict[str, int] = field(default_factory=dict)

    def tally(self) -> tuple[list[int], list[int], dict[int, int]]:
        """(missing reported, missing silent, number -> times read when more than once)."""
        seen = Counter(n for run in self.runs for n in run.numbers)
        missing = [n for n in range(1, self.written + 1) if n not in seen]
        reported: list[int] = []
        silent: list[int] = []
        for n in missing:
            covered = any(r.lost and r.frontier < n <= r.written for r in self.runs)
            (reported if covered else silent).append(n)
        return reported, silent, {n: c for n, c in seen.items() if c > 1}


# --- injected delays -----------------------------------------------------------------------


@contextmanager
def jitter(rng: random.Random, seconds: float) -> Iterator[None]:
    """Sleep up to `seconds` around the readers' looks: before opening a file, after listing
    the rotated files, before placing the newer ones, after listing a glob or the siblings."""
    if seconds <= 0:
        yield
        return
    patches: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, scale: float = 1.0, *, after: bool = False) -> None:
        real = getattr(owner, name)

        def slowed(*args: Any, **kwargs: Any) -> Any:
            if not after:
                time.sleep(rng.uniform(0, seconds * scale))
            result = real(*args, **kwargs)
            if after:
                time.sleep(rng.uniform(0, seconds * scale))
            return result

        patches.append((owner, name, real))
        setattr(owner, name, slowed)

    wrap(logtail, "_open")
    wrap(logtail, "rotated_siblings", after=True)
    wrap(logtail.TailReader, "_newer")
    wrap(logtail._File, "rewritten", 0.25)
    wrap(acct_reader, "rotated_siblings", after=True)  # AcctReader's listings of siblings
    wrap(acct_reader, "expand_paths", after=True)  # the glob, listed before files are opened
    wrap(acct_reader, "_head_print")
    try:
        yield
    finally:
        for owner, name, real in reversed(patches):
            setattr(owner, name, real)


# --- the readers, as the plugins run them ---------------------------------------------------


def tail_run(path: Path, state: object, first: bool, deadline: float | None
             ) -> tuple[list[int], bool, object, bool, int, list[str]]:
    """One TailReader run: (numbers read, lost, state to store, stopped early, 0, [])."""
    reader = TailReader(path, TailState.from_json(state), from_start=first, deadline=deadline)
    numbers = []
    for block in reader.blocks():
        for line in block.data.splitlines():
            m = LOG_NUMBER.search(line)
            if m is None:
                raise AssertionError(f"unnumbered line {line!r} in {block.source}")
            numbers.append(int(m.group(1)))
    return (numbers, reader.lost, reader.state.to_json(), reader.timed_out or reader.shifting,
            0, [])


def acct_run(spec: str, state: object, first: bool, deadline: float | None, by_tally: bool
             ) -> tuple[list[int], bool, object, bool, int, list[str]]:
    """One AcctReader run, by records or by the tally (counted per rcpt); then the rows
    skipped as malformed (a record cut in two: a bug) and the reader's warnings."""
    reader = AcctReader(spec, AcctState.from_json(state), from_start=first, deadline=deadline)
    numbers: list[int] = []
    if by_tally:
        spec_ = TallySpec.of({"d": ("rcpt",), "b": ("rcpt",)})
        for counts in reader.tally(spec_):
            for (_, _, values), n in counts.items():
                numbers += [rcpt_number(values[0])] * n
    else:
        numbers = [rcpt_number(r.rcpt) for r in reader.records()]
    lost = any(LOST_NOTE in w for w in reader.warnings)
    tail = reader.tail
    stopped = tail.timed_out or (isinstance(tail, TailReader) and tail.shifting)
    return (numbers, lost, reader.state.to_json(), stopped, reader.skipped_rows,
            reader.warnings)


def rcpt_number(rcpt: str) -> int:
    m = RCPT_NUMBER.match(rcpt)
    if m is None:
        raise AssertionError(f"unnumbered rcpt {rcpt!r}")
    return int(m.group(1))


def stress(reader: str, kinds: list[str], seed: int, args: argparse.Namespace) -> Outcome:
    """One seed: a first run from the start, runs during the churn, last runs after it."""
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="pmta-stress-"))
    try:
        if reader == "tail":
            f = RotatingFile(tmp / "log")
            truth: LogTruth | AcctTruth = LogTruth(f, seed=seed)
        else:
            f = RotatingFile(tmp / "acct.csv", header=ACCT_HEADER)
            truth = AcctTruth(f, seed=seed)
        spec = str(tmp / GLOBS[reader]) if reader in GLOBS else str(f.path)
        truth.write_batch(10)
        out = Outcome(0)
        state: object = None

        def run(first: bool = False, deadline: float | None = None) -> bool:
            nonlocal state
            frontier = max((max(r.numbers, default=0) for r in out.runs), default=0)
            with jitter(rng, args.jitter):
                if reader == "tail":
                    got = tail_run(f.path, state, first, deadline)
                else:
                    got = acct_run(spec, state, first, deadline, rng.random() < 0.5)
            numbers, lost, new, stopped, bad, warnings = got
            state = json.loads(json.dumps(new))  # as a plugin's state file keeps it
            out.runs.append(Run(numbers, lost, frontier, truth.n, bad, warnings))
            return stopped

        run(first=True)
        churn = Churn(truth, kinds, seed=seed + 1, rotate_every=0.1)
        churn.start()
        bound = time.monotonic() + args.max_seconds
        try:
            while sum(f.rotations.values()) < args.rotations and time.monotonic() < bound:
                deadline = None
                if args.deadline > 0 and rng.random() < 0.3:
                    deadline = time.monotonic() + rng.uniform(0, args.deadline)
                run(deadline=deadline)
                time.sleep(rng.uniform(0, args.gap))
        finally:
            churn.stop()
            f.close()
        for _ in range(10):  # the writer stopped: read what is left
            if not run():
                break
        out.written = truth.n
        out.rotations = dict(f.rotations)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- command line -------------------------------------------------------------------------


def seed_range(text: str) -> list[int]:
    """`3` or `1-8`."""
    a, _, b = text.partition("-")
    lo, hi = int(a), int(b or a)
    if hi < lo or hi - lo >= 1000:
        raise argparse.ArgumentTypeError(f"bad seed range {text!r} (at most 1000 seeds)")
    return list(range(lo, hi + 1))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.stress_rotation",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--readers", default="tail,acct,glob,globz",
                   help="comma-separated: tail, acct, glob, globz (default all)")
    p.add_argument("--kinds", default="",
                   help=f"rotation kinds, comma-separated from {', '.join(KINDS)} "
                        "(default per reader: " +
                        "; ".join(f"{r} {k}" for r, k in DEFAULT_KINDS.items()) + ")")
    p.add_argument("--seeds", type=seed_range, default=seed_range("1-4"),
                   help="seed or range, e.g. 1-8 (default 1-4)")
    p.add_argument("--jitter", type=float, default=0.03,
                   help="max delay in s injected around each look (default 0.03; 0: none)")
    p.add_argument("--gap", type=float, default=0.4, help="max pause between runs, s (0.4)")
    p.add_argument("--deadline", type=float, default=0.0,
                   help="if > 0, a third of the runs get a random deadline up to this many s")
    p.add_argument("--rotations", type=int, default=40,
                   help="rotations per seed (default 40, at most 10000)")
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="hard bound per seed on the churn (default 300)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="for a seed that failed, what each run read")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run every (reader, kinds, seed); one line each; 1 when any loss or repeat was silent."""
    args = build_parser().parse_args(argv)
    if not 0 < args.rotations <= 10_000:
        print("--rotations: 1..10000", file=sys.stderr)
        return 2
    readers = [r for r in args.readers.split(",") if r]
    bad = [r for r in readers if r not in DEFAULT_KINDS]
    kinds_given = [k for k in args.kinds.split(",") if k]
    bad += [k for k in kinds_given if k not in KINDS]
    if bad:
        print(f"unknown: {', '.join(bad)}", file=sys.stderr)
        return 2
    silent_seeds = 0
    for reader in readers:
        for kinds_name in kinds_given or DEFAULT_KINDS[reader].split(","):
            if reader in GLOBS and kinds_name == "numbered":
                continue  # acct.csv.N is no file of acct*.csv
            for seed in args.seeds:
                out = stress(reader, KINDS[kinds_name], seed, args)
                reported, silent, repeated = out.tally()
                malformed = sum(r.malformed for r in out.runs)
                bad_seed = bool(silent or repeated or malformed)
                silent_seeds += bad_seed
                print(f"{reader:4} {kinds_name:11} seed={seed:<4} written={out.written:<6} "
                      f"runs={len(out.runs):<4} rotations={sum(out.rotations.values()):<4} "
                      f"lost_runs={sum(r.lost for r in out.runs):<3} "
                      f"reported={len(reported):<5} silent={len(silent):<5} "
                      f"repeated={len(repeated):<5} malformed={malformed:<4}"
                      f"{'  SILENT' if bad_seed else ''}",
                      flush=True)
                if silent:
                    print(f"  silently missing: {_ranges(silent)}")
                if repeated:
                    print(f"  read twice: {_ranges(sorted(repeated))}")
                if bad_seed and args.verbose:
                    for i, r in enumerate(out.runs):
                        print(f"  run {i}: {_ranges(sorted(r.numbers)) if r.numbers else '-'}"
                              f"{' LOST' if r.lost else ''}"
                              f"{f' MALFORMED {r.malformed}' if r.malformed else ''}"
                              + "".join(f"\n    {w}" for w in r.warnings))
    print(f"{silent_seeds} seed(s) with a silent loss, a repeat or a record cut in two")
    return 1 if silent_seeds else 0


def _ranges(numbers: Sequence[int]) -> str:
    """1,2,3,7 -> '1-3 7' (the first 20 runs)."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], -1]:
        if n != prev + 1:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = n
        prev = n
    return " ".join(out[:20]) + (" ..." if len(out) > 20 else "")


if __name__ == "__main__":
    sys.exit(main())

