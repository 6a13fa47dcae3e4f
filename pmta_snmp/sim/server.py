"""HTTP(S) plumbing for the simulator: a threading server bound to 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pmta_snmp.sim.app import App, Request

LOOPBACK = "127.0.0.1"
_MAX_BODY = 1 << 20


class HttpServer(ThreadingHTTPServer):
    """Threading HTTP server that tracks its connections so it can drop them all on demand."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        port: int,
        app: App,
        stop: threading.Event,
        ssl_context: ssl.SSLContext | None = None,
        verbose: bool = False,
    ) -> None:
        self.app = app
        self.stop_event = stop
        self.ssl_context = ssl_context
        self.verbose = verbose
        self._conns: set[socket.socket] = set()
        self._resets: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__((LOOPBACK, port), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        """Accept; TLS handshakes happen later, in the connection's own thread."""
        sock, addr = self.socket.accept()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        with self._conns_lock:
            self._conns.add(sock)
        return sock, addr

    def mark_reset(self, sock: socket.socket) -> None:
        """Close this connection with a TCP reset instead of a FIN."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._conns_lock:
            self._resets.add(sock)

    def shutdown_request(self, request: Any) -> None:
        """Close a finished connection (abruptly when marked for reset)."""
        with self._conns_lock:
            self._conns.discard(request)
            reset = request in self._resets
            self._resets.discard(request)
        if reset:
            request.close()
        else:
            super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop every open connection (used when going down and on stop)."""
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Broken connections are part of the job (faults, TLS probes): report them only when
        verbose."""
        if self.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: HttpServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY every kept-alive request
    # after the first waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server_version = "pmta-sim"
    sys_version = ""
    timeout = 30

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"pmta-sim: {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            length = min(int(self.headers.get("Content-Length") or 0), _MAX_BODY)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        req = Request(
            method=method,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client_ip=self.client_address[0],
        )
        resp = self.server.app.handle(req)
        if resp.reset:
            self.close_connection = True
            self.server.mark_reset(self.request)
            return
        if resp.delay > 0 and self.server.stop_event.wait(resp.delay):
            self.close_connection = True
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(resp.body)
        if resp.after is not None:
            self.close_connection = True
            resp.after()
