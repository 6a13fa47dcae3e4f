"""OutcomesFeed and SnmpView: the agents' trees show the outcome counters as last saved with the
reading position, so a restarted worker (which continues from the save) never serves less than
its predecessor did; an engine that cannot start leaves the agent running and says why."""

from __future__ import annotations

import csv
import time
from datetime import UTC, datetime
from pathlib import Path

from pmta_snmp.config import AcctSection
from pmta_snmp.mib.layout import layout
from pmta_snmp.mib.snapshot import OidTree, SnmpType, Value
from pmta_snmp.poller import PollResult
from pmta_snmp.service import AGENT_STATE_SUBDIR, OutcomesFeed, SnmpView

HEADER = ["type", "timeLogged", "timeQueued", "orig", "rcpt", "dsnStatus", "dsnDiag", "dsnMta",
          "bounceCat", "dlvSourceIp", "vmta"]
LAY = layout()


def append(path: Path, deliveries: int) -> None:
    """`deliveries` d records to gmail.com from 192.0.2.1, timed a minute ago."""
    new = not path.exists()
    when = datetime.fromtimestamp(time.time() - 60, UTC).strftime("%Y-%m-%d %H:%M:%S%z")
    with path.open("a", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, HEADER)
        if new:
            out.writeheader()
        for i in range(deliveries):
            out.writerow({"type": "d", "timeLogged": when, "timeQueued": when,
                          "orig": "a@example.com", "rcpt": f"u{i}@gmail.com",
                          "dsnStatus": "2.0.0", "dsnDiag": "smtp;250 ok", "bounceCat": "",
                          "dsnMta": "gmail-smtp-in.l.google.com", "dlvSourceIp": "192.0.2.1",
                          "vmta": "v"})


def delivered(tree: OidTree) -> int | None:
    value = tree.get((*LAY.oid("pmtaProviderDelivered"), 5, *b"gmail"))
    return None if value is None else int(value.value)  # type: ignore[arg-type]


def section(tmp_path: Path) -> AcctSection:
    return AcctSection(files=str(tmp_path / "acct.csv"), state_dir=str(tmp_path / "state"))


def built(feed: OutcomesFeed) -> OidTree:
    """The tree a poll result gives (what the worker publishes)."""
    view = SnmpView(outcomes=feed.view)
    view.update(PollResult(None, False, datetime.now(UTC), None, 0, 1, 1, "API down"))
    return view.tree


def test_trees_show_the_counters_as_saved_not_as_read(tmp_path: Path) -> None:
    append(tmp_path / "acct.csv", 5)
    feed = OutcomesFeed(section(tmp_path))
    assert feed.engine is not None
    feed.engine.read()
    feed.engine.save()
    assert delivered(built(feed)) == 5
    append(tmp_path / "acct.csv", 3)
    feed.engine.read()  # read, not yet saved: a worker killed now continues from 5
    assert feed.engine.view.provider("gmail") is not None
    assert delivered(built(feed)) == 5
    feed.engine.save()
    assert delivered(built(feed)) == 8


def test_a_restarted_feed_starts_from_what_was_served(tmp_path: Path) -> None:
    append(tmp_path / "acct.csv", 5)
    first = OutcomesFeed(section(tmp_path))
    assert first.engine is not None
    first.engine.read()
    first.engine.save()
    append(tmp_path / "acct.csv", 4)
    first.engine.read()  # then killed: never saved again
    served = delivered(built(first))
    second = OutcomesFeed(section(tmp_path))  # the next worker, before it reads anything
    assert delivered(built(second)) == served == 5
    assert second.engine is not None
    second.engine.read()
    second.engine.save()
    assert delivered(built(second)) == 9  # the 4 unsaved records counted once, not lost


def test_the_agents_keep_their_state_apart_from_the_exporters(tmp_path: Path) -> None:
    append(tmp_path / "acct.csv", 1)
    feed = OutcomesFeed(section(tmp_path))
    assert feed.engine is not None
    assert feed.engine.state_path.parent == tmp_path / "state" / AGENT_STATE_SUBDIR


def test_an_engine_that_cannot_start_leaves_a_warning_in_the_tree(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    feed = OutcomesFeed(AcctSection(files=str(tmp_path / "acct.csv"), state_dir=str(blocker)))
    assert feed.engine is None
    feed.start()
    feed.stop()
    tree = built(feed)
    warning = tree.get((*LAY.oid("pmtaAcctWarnings"), 0))
    assert warning is not None and b"cannot follow the accounting files" in bytes(
        warning.value)  # type: ignore[arg-type]
    assert tree.get((*LAY.oid("pmtaProviderCount"), 0)) == Value(SnmpType.GAUGE32, 0)


def test_without_accounting_files_there_is_no_feed() -> None:
    assert OutcomesFeed.of(AcctSection()) is None
