"""Client tests with an injected httpx transport: negotiation, redirects, error paths."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pmta_snmp.api import (
    AsyncPmtaClient,
    ClientConfig,
    PmtaClient,
    PmtaError,
    PmtaForbidden,
    PmtaHTTPError,
    PmtaMalformed,
    PmtaTimeout,
    PmtaUnreachable,
    load_api_key,
)
from tests.unit.test_api_parse import QUEUE_ROWS, json_env, status_tree, xml_env

Handler = Callable[[httpx.Request], httpx.Response]


def pages(fmt: str = "json") -> Handler:
    env = json_env if fmt == "json" else xml_env
    data = {
        "/status": status_tree(),
        "/queues": {"queue": QUEUE_ROWS},
        "/domains": {"domain": [{"name": "gmail.com", "rcp": 1200}]},
        "/vmtas": {"vmta": [{"name": "vmta-a", "rcp": 1200}]},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("format") != fmt:
            return httpx.Response(200, text="<html><body>web monitor</body></html>")
        return httpx.Response(
            200, content=env(data[request.url.path]), headers={"content-type": "text/html"}
        )

    return handler


def client(handler: Handler, **kw: object) -> PmtaClient:
    cfg = ClientConfig(url="http://pmta.test:8080", **kw)  # type: ignore[arg-type]
    return PmtaClient(cfg, transport=httpx.MockTransport(handler))


def test_auto_falls_back_to_xml_for_4x_and_remembers() -> None:
    seen: list[str] = []
    inner = pages("xml")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.path}?{request.url.params.get('format')}")
        return inner(request)

    with client(handler) as c:
        snap = c.snapshot()
        assert c.negotiated_format == "xml"
    assert snap.status.queued_recipients == 51234
    assert len(snap.queues) == 2 and snap.domains[0].name == "gmail.com"
    assert seen[:2] == ["/status?json", "/status?xml"]
    assert all(s.endswith("?xml") for s in seen[2:])  # negotiated once


def test_json_first_when_available() -> None:
    with client(pages("json")) as c:
        assert c.status().conn.smtp_out.cur == 148
        assert c.negotiated_format == "json"


def test_explicit_xml_never_asks_json() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["format"] == "xml"
        return pages("xml")(request)

    with client(handler, api_format="xml") as c:
        assert c.vmtas()[0].name == "vmta-a"


def test_forbidden_explains_http_access_and_api_key() -> None:
    with (
        client(lambda r: httpx.Response(403, text="Forbidden")) as c,
        pytest.raises(PmtaForbidden) as err,
    ):
        c.status()
    assert "http-access" in str(err.value) and "X-API-Key" not in str(err.value)
    assert "api-key-file" in str(err.value)


def test_http_500_and_404() -> None:
    with (
        client(lambda r: httpx.Response(500, text="boom")) as c,
        pytest.raises(PmtaHTTPError) as err,
    ):
        c.status()
    assert err.value.status_code == 500 and "500" in str(err.value)
    with client(lambda r: httpx.Response(404), api_format="xml") as c, pytest.raises(PmtaHTTPError):
        c.status()


def test_wrong_envelope_and_truncated_body() -> None:
    with (
        client(
            lambda r: httpx.Response(200, content=b'{"status": "success"}'), api_format="json"
        ) as c,
        pytest.raises(PmtaMalformed) as err,
    ):
        c.status()
    assert "envelope" in str(err.value)
    with (
        client(
            lambda r: httpx.Response(200, content=xml_env(status_tree())[:50]), api_format="xml"
        ) as c,
        pytest.raises(PmtaMalformed) as err,
    ):
        c.status()
    assert "<rsp><data>" in str(err.value)  # excerpt of what arrived


def test_same_host_redirect_to_https_followed_other_host_refused() -> None:
    inner = pages("json")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            return httpx.Response(
                301, headers={"location": f"https://pmta.test:8080{request.url.raw_path.decode()}"}
            )
        return inner(request)

    with client(handler) as c:
        assert c.status().queued_recipients == 51234
    with (
        client(lambda r: httpx.Response(302, headers={"location": "http://evil.test/"})) as c,
        pytest.raises(PmtaHTTPError, match="another host"),
    ):
        c.status()


def test_api_key_header_sent_and_license_via_multipart_command() -> None:
    got: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        got["key"] = request.headers.get("x-api-key")
        got["ctype"] = request.headers.get("content-type", "")
        got["body"] = request.content
        text = "  expires: 2027-01-01\n serial: 1\n"
        return httpx.Response(
            200, content=json.dumps({"data": {}, "status": "success", "message": text}).encode()
        )

    with client(handler, api_key="k" * 40) as c:
        lic = c.license()
    assert lic.expires is not None and lic.expires.year == 2027
    assert got["key"] == "k" * 40
    assert str(got["ctype"]).startswith("multipart/form-data")
    assert b'name="command"' in got["body"] and b"show license" in got["body"]  # type: ignore[operator]


def test_command_refuses_non_show_and_repr_hides_key() -> None:
    cfg = ClientConfig(api_key="secret-key-value")
    assert "secret-key-value" not in repr(cfg)
    with client(pages()) as c, pytest.raises(PmtaError, match="only sends `show`"):
        c._run(c._core.command("pause queue x/y"))


def test_command_404_says_needs_5() -> None:
    with client(lambda r: httpx.Response(404)) as c, pytest.raises(PmtaHTTPError, match=r"5\.0"):
        c.license()


def test_seed_flavor_endpoints() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        bodies = {
            "/status.json": b'{"queue_depth": 5, "msgs_per_sec": 1}',
            "/queue.csv": b"queue,rcpt\r\na.example/v,5\r\n",
            "/domain.csv": b"domain,rcpt\r\na.example,5\r\n",
            "/vmta.csv": b"vmta,rcpt\r\nv,5\r\n",
        }
        return httpx.Response(200, content=bodies[request.url.path])

    with client(handler, flavor="seed") as c:
        snap = c.snapshot()
    assert snap.status.queued_recipients == 5 and snap.queues[0].name == "a.example/v"
    assert snap.vmtas[0].rcp == 5


def test_async_client_same_results() -> None:
    async def run() -> int:
        cfg = ClientConfig(url="http://pmta.test:8080")
        async with AsyncPmtaClient(cfg, transport=httpx.MockTransport(pages("xml"))) as c:
            snap = await c.snapshot()
        return snap.status.queued_recipients + len(snap.queues)

    assert asyncio.run(run()) == 51236


def test_api_key_from_file_and_env(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text("abc_123\n")
    assert load_api_key(f) == "abc_123"
    assert load_api_key(None, {"PMTA_API_KEY": " xyz "}) == "xyz"
    assert load_api_key(None, {}) is None
    with pytest.raises(PmtaError, match="cannot read"):
        load_api_key(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(PmtaError, match="empty"):
        load_api_key(tmp_path / "empty")


def test_bad_url_rejected() -> None:
    with pytest.raises(PmtaError, match="http"):
        ClientConfig(url="ftp://x")


# --- real sockets: refused, timeout, closed mid-answer --------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_unreachable() -> None:
    cfg = ClientConfig(url=f"http://127.0.0.1:{free_port()}", timeout=2)
    with PmtaClient(cfg) as c, pytest.raises(PmtaUnreachable, match="cannot connect"):
        c.status()


class _Slow(BaseHTTPRequestHandler):
    """A server that never answers in time: `hang` answers only when the test is over,
    `trickle` sends a byte every 50 ms of an answer that never ends, `truncate` announces more
    than it sends and hangs up. Whatever a client gets before the end is its own timeout."""

    mode = "hang"
    hits: list[str]  # request paths, set per server
    release: threading.Event  # set when the test is over

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.mode == "hang":
            self.release.wait(60)
        elif self.mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            while not self.release.wait(0.05):
                self.wfile.write(b" ")
                self.wfile.flush()
        else:  # announce more than we send, then hang up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"data": {')
            self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[tuple[str, type[_Slow]]]:
    release = threading.Event()
    handler = type("H", (_Slow,), {"hits": [], "release": release})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        release.set()
        srv.shutdown()
        srv.server_close()
        t.join(5)


# The servers below never answer within the client's timeout, so the client returning at all
# (with PmtaTimeout) is the timeout path; pytest's own timeout catches a client that hangs.


def test_hanging_server_times_out_once_for_the_whole_call(
    slow_server: tuple[str, type[_Slow]],
) -> None:
    url, handler = slow_server
    with (
        PmtaClient(ClientConfig(url=url, timeout=0.5)) as c,
        pytest.raises(PmtaTimeout, match="/status"),
    ):
        c.status()
    assert handler.hits == ["/status?format=json"]  # one budget for the call: no second try


def test_trickling_answer_is_cut_at_the_total_timeout(
    slow_server: tuple[str, type[_Slow]],
) -> None:
    """Each byte arrives well within the read timeout: only the call's total deadline ends it."""
    url, handler = slow_server
    handler.mode = "trickle"
    with (
        PmtaClient(ClientConfig(url=url, timeout=0.5)) as c,
        pytest.raises(PmtaTimeout, match=r"timed out reading PowerMTA's answer \(/status\)"),
    ):
        c.status()
    assert len(handler.hits) == 1


def test_async_slow_server_times_out(slow_server: tuple[str, type[_Slow]]) -> None:
    url, _ = slow_server

    async def run() -> None:
        async with AsyncPmtaClient(ClientConfig(url=url, timeout=0.5)) as c:
            await c.snapshot()

    with pytest.raises(PmtaTimeout, match=r"timed out after 0\.5 s waiting for PowerMTA"):
        asyncio.run(run())


def test_closed_mid_answer_is_unreachable(slow_server: tuple[str, type[_Slow]]) -> None:
    url, handler = slow_server
    handler.mode = "truncate"
    with (
        PmtaClient(ClientConfig(url=url, timeout=3)) as c,
        pytest.raises(PmtaUnreachable, match="mid-answer"),
    ):
        c.status()
