"""Client tests with an injected httpx transport: negotiation, redirects, error paths."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import tracemalloc
import zlib
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


# --- redirects stay at the origin of --url ------------------------------------------------------


def test_a_redirect_to_another_port_is_refused_and_the_api_key_stays_home() -> None:
    elsewhere: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.port == 9999:
            elsewhere.append(request.headers)
            return httpx.Response(200, content=json_env(status_tree()))
        return httpx.Response(302, headers={"location": f"http://pmta.test:9999{request.url.path}"})

    with client(handler, api_key="k" * 40) as c, pytest.raises(PmtaHTTPError) as err:
        c.status()
    assert elsewhere == []
    message = str(err.value)
    assert "/status redirected to http://pmta.test:9999/status" in message
    assert "not followed" in message and "another port" in message
    assert "k" * 40 not in message


def test_a_downgrade_from_https_to_http_is_refused() -> None:
    plain: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            plain.append(request)
            return httpx.Response(200, content=json_env(status_tree()))
        return httpx.Response(301, headers={"location": f"http://pmta.test:8080{request.url.path}"})

    cfg = ClientConfig(url="https://pmta.test:8080", api_key="k" * 40, insecure=True)
    with PmtaClient(cfg, transport=httpx.MockTransport(handler)) as c, \
            pytest.raises(PmtaHTTPError, match="downgrade from HTTPS to plain HTTP"):
        c.status()
    assert plain == []


@pytest.mark.parametrize(
    ("location", "refusal"),
    [
        ("http://other.test:8080/status", "another host"),
        ("ftp://pmta.test:8080/status", "a redirect to ftp scheme"),
        ("http://user:pw@pmta.test:8080/status", "carrying credentials"),
        ("http://pmta.test:99999/status", "malformed port"),
        ("", "names no target"),
    ],
)
def test_other_redirects_are_refused_with_the_reason(location: str, refusal: str) -> None:
    with client(lambda r: httpx.Response(302, headers={"location": location})) as c, \
            pytest.raises(PmtaHTTPError, match=refusal) as err:
        c.status()
    assert "pw" not in str(err.value)


def test_same_origin_and_same_port_upgrade_redirects_are_followed() -> None:
    inner = pages("json")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/old"):
            return httpx.Response(307, headers={"location": request.url.path[4:]})
        return inner(request)

    with client(handler) as c:
        assert c._run(c._core.get("/old/status"))  # relative: same origin
    # http://host (port 80) -> https://host (port 443): the standard upgrade, both defaults
    seen: list[str] = []

    def upgrade(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.scheme == "http":
            return httpx.Response(301, headers={"location": f"https://pmta.test{request.url.path}"})
        return inner(request)

    cfg = ClientConfig(url="http://pmta.test", insecure=True)
    with PmtaClient(cfg, transport=httpx.MockTransport(upgrade)) as c:
        assert c.status().queued_recipients == 51234
    assert seen[-1].startswith("https://pmta.test/status")


# --- credentials in --url ----------------------------------------------------------------------


def test_credentials_in_the_url_are_basic_auth_and_appear_in_no_message() -> None:
    auth: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers.get("authorization"))
        assert "s3cret" not in str(request.url)
        return httpx.Response(500, text="boom")

    cfg = ClientConfig(url="http://mon:s3cret@pmta.test:8080", api_format="json")
    assert "s3cret" not in repr(cfg)
    with PmtaClient(cfg, transport=httpx.MockTransport(handler)) as c, \
            pytest.raises(PmtaHTTPError) as err:
        c.status()
    assert auth == ["Basic bW9uOnMzY3JldA=="]  # mon:s3cret
    assert "s3cret" not in str(err.value)
    # Nothing listening: the message names the server, never the credentials.
    port = free_port()
    cfg = ClientConfig(url=f"http://mon:s3cret@127.0.0.1:{port}", timeout=2)
    with PmtaClient(cfg) as c, pytest.raises(PmtaUnreachable) as down:
        c.status()
    assert f"127.0.0.1:{port}" in str(down.value)
    assert "s3cret" not in str(down.value) and "mon:" not in str(down.value)
    with pytest.raises(PmtaError) as bad:
        ClientConfig(url="gopher://mon:s3cret@pmta.test")
    assert "s3cret" not in str(bad.value)


# --- answer sizes: counted decoded, per page and per poll ----------------------------------------


def _bomb(prefix: bytes, spaces: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(prefix)]
    block = b" " * (1 << 20)
    for _ in range(spaces >> 20):
        parts.append(packer.compress(block))
    return b"".join([*parts, packer.compress(b"}"), packer.flush()])


def test_a_gzip_bomb_is_stopped_at_the_page_limit_counted_decoded() -> None:
    """512 MiB of spaces in 500 KiB of gzip (valid JSON once expanded): refused at the page
    limit, expanded a step at a time, so the memory it takes stays near the limit."""
    bomb = _bomb(json_env(status_tree())[:-1], 512 << 20)
    assert len(bomb) < 1 << 20

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(bomb),
                              headers={"content-encoding": "gzip"})

    tracemalloc.start()
    try:
        with client(handler, api_format="json") as c, pytest.raises(PmtaMalformed) as err:
            c.status()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20, peak  # the 64 MiB default limit, not the 512 MiB the bomb holds
    assert "answer from /status exceeds 64 MiB" in str(err.value)


def test_gzip_and_deflate_answers_within_the_limits_are_read() -> None:
    body = json_env(status_tree())
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    encodings = {
        "gzip": _bomb(body[:-1], 2 << 20),  # with 2 MiB of spaces: still under the limit
        "deflate": zlib.compress(body),
        "x-deflate-raw": raw.compress(body) + raw.flush(),
    }
    for name, data in encodings.items():
        enc = "deflate" if name.startswith("x-") else name

        def handler(request: httpx.Request, data: bytes = data, enc: str = enc) -> httpx.Response:
            return httpx.Response(200, stream=httpx.ByteStream(data),
                                  headers={"content-encoding": enc})

        with client(handler, api_format="json") as c:
            assert c.status().queued_recipients == 51234, name
    with client(lambda r: httpx.Response(200, stream=httpx.ByteStream(b"x"),
                                         headers={"content-encoding": "br"}),
                api_format="json") as c, pytest.raises(PmtaMalformed, match="Content-Encoding"):
        c.status()
    with client(lambda r: httpx.Response(200, stream=httpx.ByteStream(b"\x1f\x8bjunk"),
                                         headers={"content-encoding": "gzip"}),
                api_format="json") as c, pytest.raises(PmtaMalformed, match="broken gzip"):
        c.status()


def _padded_pages(padding: int) -> Handler:
    inner = pages("json")

    def handler(request: httpx.Request) -> httpx.Response:
        body = inner(request).content
        chunks = [body[:-1], *([b" " * (1 << 18)] * (padding >> 18)), b"}"]
        return httpx.Response(200, stream=httpx.ByteStream(b"".join(chunks)))

    return handler


def test_the_pages_of_one_poll_share_one_budget() -> None:
    """Four pages of 1.5 MiB each, fetched at once: each under the 2 MiB page limit, together
    over the 3 MiB poll limit. The poll fails and says which limit."""
    cfg = ClientConfig(url="http://pmta.test:8080", api_format="json",
                       max_page_bytes=2 << 20, max_poll_bytes=3 << 20)

    async def poll() -> None:
        transport = httpx.MockTransport(_padded_pages(3 << 19))
        async with AsyncPmtaClient(cfg, transport=transport) as c:
            await c.snapshot()

    with pytest.raises(PmtaMalformed, match=r"answers of one poll exceed 3 MiB in all"):
        asyncio.run(poll())
    with PmtaClient(cfg, transport=httpx.MockTransport(_padded_pages(3 << 19))) as c, \
            pytest.raises(PmtaMalformed, match=r"answers of one poll exceed 3 MiB in all"):
        c.snapshot()
    # One page alone is fine, and each poll has a budget of its own.
    with PmtaClient(cfg, transport=httpx.MockTransport(_padded_pages(3 << 19))) as c:
        assert c.status().queued_recipients == 51234
        assert c.status().queued_recipients == 51234
    big = ClientConfig(url="http://pmta.test:8080", api_format="json", max_page_bytes=1 << 20)
    with PmtaClient(big, transport=httpx.MockTransport(_padded_pages(3 << 19))) as c, \
            pytest.raises(PmtaMalformed, match=r"answer from /status exceeds 1 MiB"):
        c.status()


def test_an_announced_length_over_the_limit_is_refused_unread() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b" " * (8 << 20)),
                              headers={"content-length": str(8 << 20)})

    cfg = ClientConfig(url="http://pmta.test:8080", api_format="json", max_page_bytes=1 << 20)
    with PmtaClient(cfg, transport=httpx.MockTransport(handler)) as c, \
            pytest.raises(PmtaMalformed, match="exceeds 1 MiB"):
        c.status()


def test_a_missing_ca_file_is_a_clear_error() -> None:
    cfg = ClientConfig(url="https://127.0.0.1:1", ca_file="/nonexistent/ca.pem", timeout=2)
    with PmtaClient(cfg) as c, pytest.raises(PmtaError, match="cannot use the CA file"):
        c.status()


def test_a_gzip_answer_in_several_members_is_read_whole() -> None:
    """gzip allows members one after another (`cat a.gz b.gz`): every member is decoded, also
    when the last one ends in the same chunk as the one before."""
    body = json_env(status_tree())
    cut = len(body) // 2
    members = gzip.compress(body[:cut]) + gzip.compress(body[cut:-1]) + gzip.compress(b"}")

    for chunk in (len(members), 7):
        pieces = [members[i:i + chunk] for i in range(0, len(members), chunk)]

        def handler(request: httpx.Request, pieces: list[bytes] = pieces) -> httpx.Response:
            return httpx.Response(200, stream=Pieces(pieces), headers={"content-encoding": "gzip"})

        with client(handler, api_format="json") as c:
            assert c.status().queued_recipients == 51234, chunk


class Pieces(httpx.SyncByteStream):
    """An answer body arriving in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces
