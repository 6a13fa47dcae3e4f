"""`SimFleet`: many simulated PowerMTA hosts in one process (`pmta-sim --instances N`).

Each host is a `Simulator` of its own (its own state and seed, its own port on 127.0.0.1);
one thread waits on every listening socket at once and hands each connection to its host's
server, which answers it in a thread as a lone simulator does. A thread per host would wake
every host's poll loop 20 times a second for nothing.
"""

from __future__ import annotations

import selectors
import threading
from typing import Any

from pmta_snmp.sim.server import HttpServer
from pmta_snmp.sim.simulator import Simulator

__all__ = ["SimFleet"]


class SimFleet:
    """`n` simulators with seeds `seed`, `seed + 1`, ... on ports `port`, `port + 1`, ... (port 0:
    free ones). `options` are Simulator's. The `down` fault is not for fleet members (the
    serving thread keeps the sockets it started with)."""

    def __init__(self, n: int, *, seed: int = 1, port: int = 0, **options: Any) -> None:
        if n < 1:
            raise ValueError("a fleet has at least one simulator")
        self.simulators = [
            Simulator(seed=seed + i, port=port + i if port else 0, own_thread=False, **options)
            for i in range(n)
        ]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def urls(self) -> list[str]:
        """The base URL of every host (known after `start()`)."""
        return [sim.url for sim in self.simulators]

    def start(self) -> SimFleet:
        """Bind every host's port, then serve them all from one thread."""
        try:
            for sim in self.simulators:
                sim.start()
        except BaseException:
            self.stop()
            raise
        servers = [sim.server for sim in self.simulators if sim.server is not None]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, args=(servers,),
                                        name="pmta-sim-fleet", daemon=True)
        self._thread.start()
        return self

    def _serve(self, servers: list[HttpServer]) -> None:
        with selectors.DefaultSelector() as selector:
            for srv in servers:
                srv.socket.setblocking(False)  # a connection gone before accept: no hang
                selector.register(srv.socket, selectors.EVENT_READ, srv)
            while not self._stop.is_set():
                for key, _events in selector.select(timeout=0.2):
                    srv = key.data
                    if srv.socket.fileno() >= 0:
                        srv.handle_request()  # readable: accepts at once, a thread answers

    def stop(self) -> None:
        """Stop serving and every simulator (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for sim in self.simulators:
            sim.stop()

    def __enter__(self) -> SimFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
