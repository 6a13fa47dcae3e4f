"""Complete per-item lists (issue 18): the CLI's list commands through POST /command with an
API key, the pages otherwise, and how complete each list is; injected transports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx
import pytest

from pmta_snmp.api import AsyncPmtaClient, ClientConfig, PmtaClient, PmtaError, PmtaMalformed
from pmta_snmp.api.client import (
    COMMAND_RETRY_SECONDS,
    DEFAULT_MAX_LIST_ITEMS,
    Listing,
    completeness,
    list_warning,
)
from pmta_snmp.api.errors import PmtaTimeout
from pmta_snmp.api.parse import (
    list_footer,
    parse_command_domains,
    parse_command_queues,
    parse_command_vmtas,
    parse_status,
)
from pmta_snmp.argtypes import DEFAULT_LIST_ITEMS
from pmta_snmp.config import ConfigError, load_config
from pmta_snmp.model import (
    ListCompleteness,
    ListSource,
    QueueTypeCounts,
    Status,
    Vmta,
    snapshot_to_dict,
    warning_kinds,
)
from tests.unit.test_api_parse import json_env, status_tree

KEY = "K" * 40
Handler = Callable[[httpx.Request], httpx.Response]


# --- a PowerMTA with 25 domains, 3 queues each, 4 VirtualMTAs -----------------------------

DOMAINS = [f"d{i:02d}.example" for i in range(25)]
VMTAS = ["v1", "v2", "v3", "v4"]


def domain_rows() -> list[dict[str, Any]]:
    return [{"name": d, "rcp": 100 - i, "kb": 1.5, "conn": 1} for i, d in enumerate(DOMAINS)]


def queue_rows() -> list[dict[str, Any]]:
    return [
        {"name": f"{d}/{v}", "rcp": 30 - i, "kb": 0.5, "conn": 0, "mode": "normal"}
        for i, d in enumerate(DOMAINS)
        for v in VMTAS[:3]
    ]


def vmta_rows() -> list[dict[str, Any]]:
    return [{"name": v, "rcp": 500, "domains": 25} for v in VMTAS]


def status_with(dom: int = 25, rcp: int = 2000) -> dict[str, Any]:
    tree = status_tree()
    tree["status"]["queue"]["smtp"] = {"rcp": rcp, "dom": dom, "kb": 10.0}
    return tree


FOOTERS = {
    "domain": "{shown} of {total} domains shown.",
    "queue": "{shown} of {total} matching queues.",
    "vmta": "\n{shown} of {total} virtual MTAs.",
}


class FakePmta:
    """Pages with the top `page_items` rows; the list commands with `--maxitems` rows and
    their footer; `command_status` answers every POST /command with that status instead."""

    def __init__(self, *, page_items: int = 10, command_status: int = 200) -> None:
        self.page_items = page_items
        self.command_status = command_status
        self.requests: list[tuple[str, str]] = []  # (method path, command)
        self.keys: list[str | None] = []

    def rows(self, kind: str) -> list[dict[str, Any]]:
        return {"domain": domain_rows, "queue": queue_rows, "vmta": vmta_rows}[kind]()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("x-api-key"))
        path = request.url.path
        if request.method == "POST":
            fields = form(request)
            self.requests.append((f"POST {path}", fields["command"]))
            if self.command_status != 200:
                return httpx.Response(self.command_status, text="<html>no</html>")
            words = fields["command"].split()
            if words[1] == "license":
                env = {"data": {}, "status": "success", "message": "  expires: never\n"}
                return httpx.Response(200, content=json.dumps(env).encode())
            kind = {"queues": "queue", "domains": "domain", "vmtas": "vmta"}[words[1]]
            n = int(words[2].partition("=")[2]) if len(words) > 2 else 20
            rows = self.rows(kind)
            shown = rows[:n]
            text = "header\n" + FOOTERS[kind].format(shown=len(shown), total=len(rows)) + "\n"
            env = {"data": {kind: shown}, "status": "success", "message": text}
            return httpx.Response(200, content=json.dumps(env).encode())
        self.requests.append((f"GET {path}", ""))
        if path == "/status":
            return httpx.Response(200, content=json_env(status_with()))
        kind = path.strip("/").rstrip("s")
        return httpx.Response(200, content=json_env({kind: self.rows(kind)[: self.page_items]}))

    @property
    def commands(self) -> list[str]:
        return [cmd for what, cmd in self.requests if what.startswith("POST")]

    @property
    def pages(self) -> list[str]:
        return [what[4:] for what, _ in self.requests if what.startswith("GET")]


def form(request: httpx.Request) -> dict[str, str]:
    """The multipart form fields of a request, as PowerMTA would read them."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + request.content)
    out = {}
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out[str(part.get_param("name", header="content-disposition"))] = payload.decode()
    return out


def client(handler: Handler, **kw: Any) -> PmtaClient:
    cfg = ClientConfig(url="http://pmta.test:8080", **kw)
    return PmtaClient(cfg, transport=httpx.MockTransport(handler))


# --- the footers and the command answers --------------------------------------------------


def test_footers_of_the_list_commands_give_shown_and_total() -> None:
    assert list_footer("domain", "x\n20 of 2000 domains shown.\n") == (20, 2000)
    assert list_footer("queue", "rows\n  1,000 of 12,345 matching queues.") == (1000, 12345)
    assert list_footer("vmta", "a\n\n5 of 5 virtual MTAs.\n") == (5, 5)
    assert list_footer("domain", "Recipient Events\n3 of 4 domains shown.\n9 of 9 domains "
                       "shown.") == (9, 9)  # the footer is the last such line
    assert list_footer("domain", "no footer here") is None
    assert list_footer("queue", "20 of 30 domains shown.") is None  # another command's


def test_command_rows_in_the_clis_own_words_are_read() -> None:
    """The --json shape of the list commands is undocumented: a list under any key, the name
    under the row's kind, the CLI's column words (rcpt, kbytes) all read."""
    data = {"domains": [{"domain": "a.example", "rcpt": "7", "kbytes": "1.5", "conn": 2},
                        {"name": "b.example", "rcp": 3}]}
    rows, footer = parse_command_domains(data, "2 of 2 domains shown.\n")
    assert [(d.name, d.rcp, d.kb, d.conn) for d in rows] == [
        ("a.example", 7, 1.5, 2), ("b.example", 3, 0.0, 0)]
    assert footer == (2, 2)
    queues, _ = parse_command_queues([{"queue": "a.example/v1", "rcpt": 4}])
    assert queues[0].name == "a.example/v1" and queues[0].vmta == "v1"
    vmtas, none = parse_command_vmtas({"vmta": [{"name": "v1", "rcp": 1}]})
    assert vmtas[0].name == "v1" and none is None


def test_command_rows_without_kb_or_conn_warn_nothing() -> None:
    """Only name and recipients are required: the command's other fields are [?]."""
    warnings: list[str] = []
    parse_command_domains({"domain": [{"name": "a.example", "rcp": 1}]}, warnings=warnings)
    assert warnings == []


def test_an_unreadable_command_shape_fails_rather_than_reading_as_empty() -> None:
    with pytest.raises(PmtaMalformed, match=r"no domain rows .* footer says 2 are shown"):
        parse_command_domains({"weird": {"a": 1}}, "2 of 2 domains shown.")
    rows, footer = parse_command_domains({}, "0 of 0 domains shown.")
    assert rows == () and footer == (0, 0)


def test_a_malformed_required_value_in_a_command_row_fails_in_one_line() -> None:
    with pytest.raises(PmtaMalformed) as err:
        parse_command_domains({"domain": [{"name": "a.example", "rcp": "lots"}]})
    assert str(err.value).startswith("show domains: domain 'a.example' rcp")
    assert "\n" not in str(err.value)


# --- which source, with and without a key -----------------------------------------------


def test_with_an_api_key_the_lists_come_whole_from_the_list_commands() -> None:
    pmta = FakePmta()
    with client(pmta, api_key=KEY, max_list_items=500) as c:
        snap = c.snapshot()
    assert pmta.commands == [
        "show queues --maxitems=500", "show domains --maxitems=500", "show vmtas --maxitems=500"
    ]
    assert pmta.pages == ["/status"]
    assert len(snap.domains) == 25 and len(snap.queues) == 75 and len(snap.vmtas) == 4
    lists = snap.lists
    assert lists.source == "command"
    assert lists.domains == ListCompleteness(
        ListSource.COMMAND, 25, 25, True, "show domains --maxitems=500 footer")
    assert lists.queues is not None and lists.queues.complete
    assert snap.warnings == ()


def test_without_a_key_the_pages_serve_and_the_warning_names_the_missing_rows() -> None:
    pmta = FakePmta()
    with client(pmta) as c:
        snap = c.snapshot()
    assert pmta.commands == []
    assert len(snap.domains) == 10 and len(snap.queues) == 10
    assert snap.lists.source == "page"
    domains = snap.lists.domains
    assert domains is not None
    assert (domains.listed, domains.known, domains.missing) == (10, 25, 15)
    queues = snap.lists.queues
    assert queues is not None and not queues.exact and queues.missing == 15
    assert "/domains: lists 10 of 25 domains (status.queue.smtp.dom): 15 missing; complete " \
           "lists need an API key (POST /command) or a larger http-default-max-items" \
           in "\n".join(snap.warnings)
    assert any(w.startswith("/queues: lists 10 queues, PowerMTA has at least 25") and
               "at least 15 missing" in w for w in snap.warnings)


def test_a_page_of_vmtas_has_no_count_and_warns_only_when_recipients_are_missing() -> None:
    status = parse_status(status_with(rcp=2000))
    rows = tuple(Vmta(f"v{i}", 100) for i in range(10))
    found = completeness("vmta", Listing(rows, ListSource.PAGE), status)
    assert found.known is None and found.missing is None and not found.complete
    text = list_warning("vmta", Listing(rows, ListSource.PAGE), found, status)
    assert text is not None and "holding 1000 of 2000 queued recipients" in text
    full = tuple(Vmta(f"v{i}", 200) for i in range(10))
    found = completeness("vmta", Listing(full, ListSource.PAGE), status)
    assert list_warning("vmta", Listing(full, ListSource.PAGE), found, status) is None


def test_a_list_command_cut_at_maxitems_says_to_raise_max_list_items() -> None:
    pmta = FakePmta()
    with client(pmta, api_key=KEY, max_list_items=20) as c:
        snap = c.snapshot()
    assert len(snap.domains) == 20
    assert ("show domains --maxitems=20: lists 20 of 25 domains (show domains --maxitems=20 "
            "footer): 5 missing; raise pmta.max_list_items (--max-list-items) to list them all"
            ) in snap.warnings


def test_without_a_footer_fewer_rows_than_asked_for_are_the_whole_list() -> None:
    listing = Listing(tuple(Vmta(f"v{i}") for i in range(3)), ListSource.COMMAND)
    found = completeness("vmta", listing, None, max_list_items=50)
    assert (found.known, found.exact, found.complete) == (3, True, True)
    cut = completeness("vmta", listing, None, max_list_items=3)
    assert cut.known is None  # as many as asked for: there may be more


def test_max_list_items_zero_reads_the_pages_even_with_a_key() -> None:
    pmta = FakePmta()
    with client(pmta, api_key=KEY, max_list_items=0) as c:
        snap = c.snapshot()
    assert pmta.commands == [] and snap.lists.source == "page"
    assert not any(w.startswith("/command") for w in snap.warnings)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_falls_back_to_the_pages_once_per_retry_period(status: int) -> None:
    pmta = FakePmta(command_status=status)
    with client(pmta, api_key=KEY) as c:
        first = c.snapshot()
        asked = len(pmta.commands)
        second = c.snapshot()
    assert asked >= 1 and len(pmta.commands) == asked  # not asked again at the next poll
    for snap in (first, second):
        assert snap.lists.source == "page" and len(snap.domains) == 10
        assert any(w.startswith("/command: lists read from the pages instead of the list "
                                "commands: PowerMTA refused the API key") for w in snap.warnings)
        assert any("15 missing" in w for w in snap.warnings)


@pytest.mark.parametrize("status", [404, 405, 500])
def test_a_powermta_without_the_list_commands_falls_back_to_the_pages(status: int) -> None:
    pmta = FakePmta(command_status=status)
    with client(pmta, api_key=KEY) as c:
        snap = c.snapshot()
    assert snap.lists.source == "page" and len(snap.queues) == 10
    assert any(w.startswith("/command: lists read from the pages") for w in snap.warnings)


def test_a_command_timeout_fails_the_poll_instead_of_hiding_behind_the_pages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.ReadTimeout("slow", request=request)
        return FakePmta()(request)

    with client(handler, api_key=KEY) as c, pytest.raises(PmtaTimeout):
        c.snapshot()


def test_the_command_path_keeps_the_redirect_rules_and_the_key_stays_home() -> None:
    """A redirect of POST /command to another host is refused like a page's: the key is not
    sent there, and the lists come from the pages."""
    pmta = FakePmta()
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.method == "POST":
            return httpx.Response(307, headers={"location": "http://evil.test/command"})
        return pmta(request)

    with client(handler, api_key=KEY) as c:
        snap = c.snapshot()
    assert set(hosts) == {"pmta.test"}
    assert snap.lists.source == "page"
    assert any("another host" in w for w in snap.warnings)
    assert all(KEY not in w for w in snap.warnings)


def test_a_command_answer_over_the_page_limit_falls_back_and_says_so() -> None:
    pmta = FakePmta()
    with client(pmta, api_key=KEY, max_page_bytes=3000) as c:
        snap = c.snapshot()
    assert snap.lists.source in ("page", "mixed")
    assert any("the page limit" in w for w in snap.warnings)


def test_the_async_client_reads_the_same_lists() -> None:
    async def run(**kw: Any) -> Any:
        cfg = ClientConfig(url="http://pmta.test:8080", **kw)
        async with AsyncPmtaClient(cfg, transport=httpx.MockTransport(FakePmta())) as c:
            return await c.snapshot()

    with_key = asyncio.run(run(api_key=KEY))
    without = asyncio.run(run())
    assert len(with_key.domains) == 25 and with_key.lists.source == "command"
    assert len(without.domains) == 10 and without.lists.domains is not None
    assert without.lists.domains.missing == 15


def test_one_list_call_for_a_plugin_with_its_completeness() -> None:
    pmta = FakePmta()
    with client(pmta) as c:
        status = c.status()
        rows, found = c.domain_list(status)
    assert len(rows) == 10 and found.missing == 15
    with client(FakePmta(), api_key=KEY) as c:
        queues, found = c.queue_list(c.status())
    assert len(queues) == 75 and found.complete and found.source is ListSource.COMMAND


# --- model, poll --json, settings ---------------------------------------------------------


def test_poll_json_says_where_each_list_came_from_and_how_complete_it_is() -> None:
    with client(FakePmta()) as c:
        doc = snapshot_to_dict(c.snapshot())
    assert doc["lists"]["source"] == "page"
    assert doc["lists"]["domains"] == {
        "source": "page", "listed": 10, "known": 25, "exact": True,
        "known_from": "status.queue.smtp.dom", "missing": 15, "complete": False,
    }
    assert doc["lists"]["vmtas"]["known"] is None


def test_a_status_without_a_domain_count_claims_no_count() -> None:
    status = Status(queue_types=(QueueTypeCounts("smtp", rcp=5, dom=0),))
    rows = tuple(Vmta(f"v{i}") for i in range(2))
    found = completeness("domain", Listing(rows, ListSource.PAGE), status)  # type: ignore[arg-type]
    assert found.known is None


def test_log_comparisons_ignore_the_counts_in_warnings() -> None:
    a = ("/domains: lists 10 of 1967 domains: 1957 missing",)
    b = ("/domains: lists 10 of 1970 domains: 1960 missing",)
    assert warning_kinds(a) == warning_kinds(b)
    assert warning_kinds(a) != warning_kinds(("/queues: lists 10 queues",))


def test_max_list_items_setting_is_bounded_and_the_defaults_agree() -> None:
    assert DEFAULT_LIST_ITEMS == DEFAULT_MAX_LIST_ITEMS
    assert load_config(environ={}).pmta.max_list_items == DEFAULT_MAX_LIST_ITEMS
    cfg = load_config(environ={"PMTA_SNMP_PMTA_MAX_LIST_ITEMS": "0"})
    assert cfg.pmta.max_list_items == 0
    with pytest.raises(ConfigError, match="max_list_items"):
        load_config(environ={"PMTA_SNMP_PMTA_MAX_LIST_ITEMS": "2000000"})
    with pytest.raises(PmtaError, match="max_list_items"):
        ClientConfig(max_list_items=-1)


def test_after_the_retry_period_a_key_now_accepted_lists_whole_again() -> None:
    pmta = FakePmta(command_status=403)
    with client(pmta, api_key=KEY) as c:
        assert c.snapshot().lists.source == "page"
        refused = c._core.commands_refused
        assert refused is not None
        pmta.command_status = 200  # the key was added to PowerMTA's config
        c._core.commands_refused = (refused[0] - COMMAND_RETRY_SECONDS, refused[1])
        snap = c.snapshot()
    assert snap.lists.source == "command" and len(snap.domains) == 25
    assert not any(w.startswith("/command") for w in snap.warnings)
