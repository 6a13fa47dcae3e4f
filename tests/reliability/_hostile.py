"""A hostile PowerMTA API for tests: the simulator's answers, or bad ones, switched at will.

`HostileApi(sim.url)` listens on 127.0.0.1 and forwards every request to the simulator while
`mode` is "good". Any other mode replaces the answer of the data pages (/status, /queues,
/domains, /vmtas; POST /command is always forwarded):

* "inf", "nan": /status as the simulator wrote it, with a number replaced by `1e400` (JSON's
  way to say infinity to Python) or `NaN`;
* "deep": a JSON envelope nested 200,000 deep; "deepxml": XML nested 100,000 deep;
* "huge": the real answer followed by `huge_bytes` of spaces (still valid JSON), sent without a
  Content-Length so that only counting the bytes as they come can stop it;
* "bomb": the real answer plus `bomb_bytes` of spaces, gzip-compressed (a few hundred KiB on
  the wire), with `Content-Encoding: gzip`;
* "garbage": binary junk;
* "redirect": 302 to the same path on `elsewhere`, another server on another port, which
  records every request it gets (and its headers) in `elsewhere.seen`.

`requests` counts the requests answered, `auth` keeps the last Authorization header seen.
No test lives here; stop the servers with `stop()` (or use it as a context manager).
"""

from __future__ import annotations

import contextlib
import gzip
import re
import threading
import urllib.error
import urllib.request
import zlib
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("good", "inf", "nan", "deep", "deepxml", "huge", "bomb", "garbage", "redirect")
_DATA_PAGES = ("/status", "/queues", "/domains", "/vmtas")
_NUMBER = re.compile(rb'("rcp"\s*:\s*)\d+')


@lru_cache(maxsize=4)
def _spaces_member(padding: int) -> bytes:
    """`padding` spaces as one gzip member, compressed a block at a time (made once)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = []
    block = b" " * (1 << 20)
    left = padding
    while left > 0:
        out.append(packer.compress(block[: min(left, len(block))]))
        left -= len(block)
    out.append(packer.flush())
    return b"".join(out)


def _bomb(prefix: bytes, padding: int) -> bytes:
    """`prefix`, `padding` spaces and `}` as three gzip members (one stream, as gzip allows);
    `prefix` is a JSON answer without its closing brace."""
    return gzip.compress(prefix, mtime=0) + _spaces_member(padding) + gzip.compress(b"}", mtime=0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Recorder:
    """A server that answers 200 to anything and remembers (path, headers) of each request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                recorder.seen.append((self.path, dict(self.headers.items())))
                body = b'{"status": "success", "data": {}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class HostileApi:
    """The simulator behind a switch; see the module docstring for the modes."""

    def __init__(self, upstream: str, *, huge_bytes: int = 8 << 20,
                 bomb_bytes: int = 64 << 20) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "good"
        self.huge_bytes = huge_bytes
        self.bomb_bytes = bomb_bytes
        self.requests = 0
        self.auth: str | None = None
        self.elsewhere = Recorder()
        _spaces_member(bomb_bytes)  # compressed now, not by a dozen requests at once
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # bodies may end at the close (no Content-Length)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._answer(self, "GET")

            def do_POST(self) -> None:
                api._answer(self, "POST")

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, userinfo: str) -> str:
        """The URL with `user:password@` in it."""
        return f"http://{userinfo}@127.0.0.1:{self.port}"

    # -- answers ---------------------------------------------------------------------------------

    def _forward(self, h: BaseHTTPRequestHandler, method: str) -> tuple[int, dict[str, str], bytes]:
        length = int(h.headers.get("Content-Length") or 0)
        data = h.rfile.read(length) if length else None
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() in ("x-api-key", "content-type", "accept")}
        req = urllib.request.Request(self.upstream + h.path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()

    def _answer(self, h: BaseHTTPRequestHandler, method: str) -> None:
        self.requests += 1
        if h.headers.get("Authorization"):
            self.auth = h.headers["Authorization"]
        mode = self.mode
        path = h.path.split("?", 1)[0]
        if mode == "good" or path not in _DATA_PAGES:
            status, headers, body = self._forward(h, method)
            self._send(h, status, body, headers.get("Content-Type", "application/json"))
            return
        if mode == "redirect":
            h.send_response(302)
            h.send_header("Location", f"http://127.0.0.1:{self.elsewhere.port}{h.path}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if mode == "deep":
            depth = 200_000
            self._send(h, 200, b'{"status": "success", "data": ' + b"[" * depth + b"]" * depth
                       + b"}")
            return
        if mode == "deepxml":
            depth = 100_000
            self._send(h, 200, b"<rsp><succ/><data>" + b"<a>" * depth + b"</a>" * depth
                       + b"</data></rsp>", "text/xml")
            return
        if mode == "garbage":
            self._send(h, 200, bytes(range(256)) * 64, "application/octet-stream")
            return
        status, headers, body = self._forward(h, method)
        ctype = headers.get("Content-Type", "application/json")
        if mode in ("inf", "nan"):
            if path == "/status":
                body = _NUMBER.sub(rb"\g<1>" + (b"1e400" if mode == "inf" else b"NaN"), body, 1)
            self._send(h, status, body, ctype)
        elif mode == "huge":
            self._stream(h, body, self.huge_bytes, ctype)
        elif mode == "bomb":
            packed = _bomb(body.rstrip()[:-1], self.bomb_bytes)
            self._send(h, status, packed, ctype, encoding="gzip")
        else:  # pragma: no cover - a test asked for a mode that does not exist
            raise ValueError(f"unknown mode {mode!r}")

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes,
              ctype: str = "application/json", encoding: str | None = None) -> None:
        with contextlib.suppress(OSError):
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            if encoding:
                h.send_header("Content-Encoding", encoding)
            h.end_headers()
            h.wfile.write(body)

    @staticmethod
    def _stream(h: BaseHTTPRequestHandler, body: bytes, padding: int, ctype: str) -> None:
        """`body`, then `padding` spaces, no Content-Length: the body ends at the close."""
        block = b" " * (1 << 20)
        with contextlib.suppress(OSError):
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.end_headers()
            h.wfile.write(body.rstrip()[:-1])  # the envelope stays open: spaces, then "}"
            left = padding
            while left > 0:
                h.wfile.write(block[: min(left, len(block))])
                left -= len(block)
            h.wfile.write(b"}")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.elsewhere.stop()

    def __enter__(self) -> HostileApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
