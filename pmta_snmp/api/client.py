"""PowerMTA HTTP management API client over httpx, sync (checks) and async (agent).

Both clients drive the same request plans: each operation is a generator that yields the HTTP
requests it needs and receives the responses, so format negotiation, redirects, error mapping
and parsing exist once. Only the sending differs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from pmta_snmp import __version__
from pmta_snmp.api import parse
from pmta_snmp.api.errors import (
    FORBIDDEN_HINT,
    PmtaError,
    PmtaForbidden,
    PmtaHTTPError,
    PmtaMalformed,
    PmtaTimeout,
    PmtaUnreachable,
    excerpt,
)
from pmta_snmp.model import Domain, License, Queue, Snapshot, Status, Vmta

if TYPE_CHECKING:
    import ssl

ApiFormat = Literal["auto", "json", "xml"]
ApiFlavor = Literal["real", "seed"]
T = TypeVar("T")

API_KEY_ENV = "PMTA_API_KEY"
MAX_BODY_BYTES = 256 * 1024 * 1024
_MAX_REDIRECTS = 3


def load_api_key(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The API key from a file (first line) or the PMTA_API_KEY environment variable.

    Never from argv: command lines are visible to every user in `ps`.
    """
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise PmtaError(f"cannot read API key file {path}: {exc.strerror}") from None
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not key:
            raise PmtaError(f"API key file {path} is empty")
        return key
    env = os.environ if environ is None else environ
    key = env.get(API_KEY_ENV, "").strip()
    return key or None


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to reach PowerMTA's HTTP management interface."""

    url: str = "http://127.0.0.1:8080"
    api_key: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    insecure: bool = False
    api_format: ApiFormat = "auto"
    flavor: ApiFlavor = "real"
    connect_timeout: float = 5.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PmtaError(f"URL {self.url!r} must look like http(s)://host:port")


# The request and response of a plan are NamedTuples, not dataclasses: making a dataclass
# costs ~0.5 ms of a check plugin's start.


class _Req(NamedTuple):
    method: str
    url: str
    params: Mapping[str, str]
    multipart: Mapping[str, str] | None = None

    def files(self) -> dict[str, tuple[None, str]] | None:
        """The multipart fields as httpx `files` (no file names: plain form fields)."""
        return {k: (None, v) for k, v in self.multipart.items()} if self.multipart else None


class _Resp(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes


_Plan = Generator[_Req, _Resp, T]


class _FormatMismatch(Exception):
    """The server does not speak the requested format (e.g. PowerMTA 4.x and JSON)."""


class _Core:
    """What both clients share: request plans, format negotiation and error mapping."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.base = config.url.rstrip("/") + "/"
        self.format: Literal["json", "xml"] | None = (
            None if config.api_format == "auto" else config.api_format
        )

    # -- transport settings ----------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        h = {"User-Agent": f"pmta-snmp/{__version__}", "Accept": "application/json, text/xml"}
        if self.config.api_key:
            h["X-API-Key"] = self.config.api_key
        return h

    def verify(self) -> ssl.SSLContext | bool:
        """The TLS settings of an https pool (loading the CA store costs ~20 ms: never for
        plain http)."""
        if self.config.insecure:
            return False
        import ssl

        return ssl.create_default_context(cafile=self.config.ca_file)

    def timeout(self) -> httpx.Timeout:
        c = self.config
        return httpx.Timeout(c.timeout, connect=min(c.connect_timeout, c.timeout))

    def pool_options(self, url: str) -> tuple[bool, dict[str, Any]]:
        """(is TLS, httpx client options) of the pool for `url`'s scheme. One pool per scheme,
        made on first use: plain http needs no TLS context (loading the CA store costs ~20 ms
        of a plugin's start), and a redirect to https gets one."""
        tls = url.startswith("https:")
        return tls, {
            "headers": self.headers(),
            "verify": self.verify() if tls else False,
            "timeout": self.timeout(),
            "follow_redirects": False,
        }

    # -- request plans ---------------------------------------------------------------------

    def _formats(self) -> tuple[Literal["json", "xml"], ...]:
        if self.format is not None:
            return (self.format,)
        return ("json", "xml")

    def _send(self, req: _Req) -> _Plan[_Resp]:
        """Yield a request, following same-host redirects (5.0 redirects HTTP to HTTPS)."""
        for _ in range(_MAX_REDIRECTS + 1):
            resp = yield req
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("location", "")
            target = urljoin(req.url, location)
            old, new = urlsplit(req.url), urlsplit(target)
            if not location or new.hostname != old.hostname:
                raise PmtaHTTPError(
                    f"{old.path} redirected to {location or '(nowhere)'}: not following a "
                    "redirect to another host (fix --url)",
                    resp.status,
                )
            if old.scheme == "http" and new.scheme == "https":
                # Remember the HTTPS base so later requests skip the redirect.
                self.base = f"https://{new.netloc}/"
            req = _Req(req.method, target, req.params, req.multipart)
        raise PmtaHTTPError(f"too many redirects from {urlsplit(req.url).path}", 310)

    def _check(self, resp: _Resp, path: str, *, fmt: str | None) -> bytes:
        if resp.status in (401, 403):
            raise PmtaForbidden(f"PowerMTA refused {path} (HTTP {resp.status}): {FORBIDDEN_HINT}")
        if resp.status in (400, 404, 406, 415) and fmt == "json" and self.format is None:
            raise _FormatMismatch
        if resp.status == 404:
            raise PmtaHTTPError(
                f"{path} not found (HTTP 404): is this PowerMTA's web monitor "
                "port and does this version have the endpoint?",
                404,
            )
        if not 200 <= resp.status < 300:
            raise PmtaHTTPError(
                f"{path} answered HTTP {resp.status}: {excerpt(resp.body, 60)}", resp.status
            )
        return resp.body

    def get(self, path: str, params: Mapping[str, str] | None = None) -> _Plan[parse.Node]:
        """GET a data page in JSON or XML (auto: JSON, falling back to XML for 4.x)."""
        last: Exception | None = None
        for fmt in self._formats():
            req = _Req(
                "GET", urljoin(self.base, path.lstrip("/")), {**(params or {}), "format": fmt}
            )
            resp = yield from self._send(req)
            try:
                body = self._check(resp, path, fmt=fmt)
                if fmt == "json" and self.format is None and body.lstrip()[:1] not in (b"{", b"["):
                    raise _FormatMismatch  # 4.x answers format=json with its HTML page
                data = parse.unwrap(body)
            except _FormatMismatch as exc:
                last = exc
                continue
            self.format = fmt
            return data
        raise PmtaMalformed(
            f"{path} answered neither JSON nor XML data (is this PowerMTA's web monitor?)"
        ) from last

    def get_raw(self, path: str, params: Mapping[str, str] | None = None) -> _Plan[bytes]:
        """GET a page as bytes (the seed flavour's invented endpoints)."""
        req = _Req("GET", urljoin(self.base, path.lstrip("/")), dict(params or {}))
        resp = yield from self._send(req)
        return self._check(resp, path, fmt=None)

    def command(self, command: str) -> _Plan[tuple[parse.Node, str]]:
        """POST /command with multipart `command` and `format` fields (JSON, else XML).

        Only `show …` commands are sent: the product is read-only.
        """
        if not command.startswith("show "):
            raise PmtaError(f"refusing to send {command!r}: pmta-snmp only sends `show` commands")
        for fmt in ("json", "xml"):
            req = _Req(
                "POST", urljoin(self.base, "command"), {}, {"command": command, "format": fmt}
            )
            resp = yield from self._send(req)
            if resp.status == 404:
                raise PmtaHTTPError(
                    "POST /command not found: it needs PowerMTA 5.0 (use --license-file on 4.x)",
                    404,
                )
            if resp.status == 400 and fmt == "json":
                continue  # no JSON on this version: ask for XML
            body = self._check(resp, "/command", fmt=None)
            return parse.unwrap(body), parse.unwrap_message(body)
        raise AssertionError("unreachable")

    # -- operations --------------------------------------------------------------------------

    # `warnings` collects the optional values a page left out (parse.py's rule).

    def status(self, warnings: list[str] | None = None) -> _Plan[Status]:
        if self.config.flavor == "seed":
            body = yield from self.get_raw("/status.json")
            return parse.parse_seed_status(body, warnings=warnings)
        return parse.parse_status((yield from self.get("/status")), warnings=warnings)

    def queues(self, warnings: list[str] | None = None) -> _Plan[tuple[Queue, ...]]:
        if self.config.flavor == "seed":
            body = yield from self.get_raw("/queue.csv")
            return parse.parse_seed_queues(body, warnings=warnings)
        return parse.parse_queues((yield from self.get("/queues")), warnings=warnings)

    def domains(self, warnings: list[str] | None = None) -> _Plan[tuple[Domain, ...]]:
        if self.config.flavor == "seed":
            body = yield from self.get_raw("/domain.csv")
            return parse.parse_seed_domains(body, warnings=warnings)
        return parse.parse_domains((yield from self.get("/domains")), warnings=warnings)

    def vmtas(self, warnings: list[str] | None = None) -> _Plan[tuple[Vmta, ...]]:
        if self.config.flavor == "seed":
            body = yield from self.get_raw("/vmta.csv")
            return parse.parse_seed_vmtas(body, warnings=warnings)
        return parse.parse_vmtas((yield from self.get("/vmtas")), warnings=warnings)

    def queue_detail(self, name: str) -> _Plan[Queue | None]:
        return parse.parse_queue_detail((yield from self.get("/queueDetail", {"queue": name})))

    def domain_detail(self, name: str) -> _Plan[Domain | None]:
        return parse.parse_domain_detail((yield from self.get("/domainDetail", {"domain": name})))

    def license(self) -> _Plan[License]:
        data, message = yield from self.command("show license")
        return parse.parse_license(data, message)

    def version(self) -> _Plan[str | None]:
        data, message = yield from self.command("show version")
        return parse.parse_version(data, message)

    def extras(
        self, status: Status, with_license: bool
    ) -> _Plan[tuple[Status, License | None, list[str]]]:
        """`show license`, and `show version` when `/status` had no `mta` block (4.x).

        Failures here are warnings: the snapshot is still good without them.
        """
        lic: License | None = None
        warnings: list[str] = []
        if not with_license:
            return status, lic, warnings
        try:
            lic = yield from self.license()
        except PmtaError as exc:
            warnings.append(f"license: {exc}")
        if status.runtime.version is None and self.config.flavor == "real":
            try:
                version = yield from self.version()
            except PmtaError as exc:
                warnings.append(f"version: {exc}")
            else:
                runtime = dataclasses.replace(status.runtime, version=version)
                status = dataclasses.replace(status, runtime=runtime)
        return status, lic, warnings


def _map_transport_error(exc: httpx.HTTPError, url: str) -> PmtaError:
    where = urlsplit(url)
    target = f"{where.scheme}://{where.netloc}"
    if isinstance(exc, httpx.TimeoutException):
        kind = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
        return PmtaTimeout(f"timed out {kind} PowerMTA at {target}{where.path}")
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        reason = text.rsplit(":", maxsplit=1)[-1].strip()[:80]
        return PmtaUnreachable(
            f"TLS certificate of {target} not trusted ({reason}); "
            "pass the PowerMTA certificate with --ca-file, or --insecure to skip verification"
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return PmtaUnreachable(f"PowerMTA at {target} closed the connection mid-answer ({text})")
    if isinstance(exc, httpx.ConnectError):
        return PmtaUnreachable(f"cannot connect to PowerMTA at {target}: {text or 'refused'}")
    return PmtaUnreachable(f"HTTP error talking to {target}: {type(exc).__name__}: {text}")


class _Body:
    """The chunks of one answer, at most MAX_BODY_BYTES of them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_BODY_BYTES:
            raise PmtaMalformed(
                f"answer from {urlsplit(self.url).path} exceeds {MAX_BODY_BYTES} bytes"
            )
        self.chunks.append(chunk)

    def resp(self, resp: httpx.Response) -> _Resp:
        return _Resp(resp.status_code, resp.headers, b"".join(self.chunks))


class PmtaClient:
    """Synchronous client (check plugins, `pmta-snmp poll`)."""

    def __init__(
        self, config: ClientConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._core = _Core(config)
        self._transport = transport
        self._pools: dict[bool, httpx.Client] = {}

    def _http(self, url: str) -> httpx.Client:
        tls, options = self._core.pool_options(url)
        if tls not in self._pools:
            self._pools[tls] = httpx.Client(transport=self._transport, **options)
        return self._pools[tls]

    def __enter__(self) -> PmtaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pools."""
        for pool in self._pools.values():
            pool.close()

    @property
    def negotiated_format(self) -> str | None:
        """The format that worked (`json` or `xml`), once known."""
        return self._core.format

    def _run(self, plan: _Plan[T]) -> T:
        deadline = time.monotonic() + self._core.config.timeout
        try:
            req = next(plan)
            while True:
                req = plan.send(self._send(req, deadline))
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _send(self, req: _Req, deadline: float) -> _Resp:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PmtaTimeout(f"timed out waiting for PowerMTA ({urlsplit(req.url).path})")
        cfg = self._core.config
        timeout = httpx.Timeout(remaining, connect=min(cfg.connect_timeout, remaining))
        try:
            with self._http(req.url).stream(
                req.method, req.url, params=req.params, files=req.files(), timeout=timeout
            ) as resp:
                body = _Body(req.url)
                for chunk in resp.iter_bytes():
                    body.add(chunk)
                    if time.monotonic() > deadline:
                        raise PmtaTimeout(
                            f"timed out reading PowerMTA's answer ({urlsplit(req.url).path})"
                        )
                return body.resp(resp)
        except httpx.HTTPError as exc:
            raise _map_transport_error(exc, req.url) from None

    def status(self) -> Status:
        """`/status`."""
        return self._run(self._core.status())

    def queues(self) -> tuple[Queue, ...]:
        """`/queues` (top queues)."""
        return self._run(self._core.queues())

    def domains(self) -> tuple[Domain, ...]:
        """`/domains`."""
        return self._run(self._core.domains())

    def vmtas(self) -> tuple[Vmta, ...]:
        """`/vmtas`."""
        return self._run(self._core.vmtas())

    def queue_detail(self, name: str) -> Queue | None:
        """`/queueDetail?queue=domain/vmta`."""
        return self._run(self._core.queue_detail(name))

    def domain_detail(self, name: str) -> Domain | None:
        """`/domainDetail?domain=`."""
        return self._run(self._core.domain_detail(name))

    def license(self) -> License:
        """`show license` via POST /command."""
        return self._run(self._core.license())

    def version(self) -> str | None:
        """`show version` via POST /command."""
        return self._run(self._core.version())

    def snapshot(self, *, with_license: bool = False) -> Snapshot:
        """Status, queues, domains and VirtualMTAs (and the license) as one Snapshot."""
        core, noted = self._core, list[str]()
        status = self._run(core.status(noted))
        queues = self._run(core.queues(noted))
        domains = self._run(core.domains(noted))
        vmtas = self._run(core.vmtas(noted))
        status, lic, warnings = self._run(core.extras(status, with_license))
        return _assemble(core, status, queues, domains, vmtas, lic, _by_page(noted) + warnings)


class AsyncPmtaClient:
    """Asynchronous client (the agent's poller): the same plans, sent with httpx.AsyncClient."""

    def __init__(
        self, config: ClientConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._core = _Core(config)
        self._transport = transport
        self._pools: dict[bool, httpx.AsyncClient] = {}

    def _http(self, url: str) -> httpx.AsyncClient:
        tls, options = self._core.pool_options(url)
        if tls not in self._pools:
            self._pools[tls] = httpx.AsyncClient(transport=self._transport, **options)
        return self._pools[tls]

    async def __aenter__(self) -> AsyncPmtaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        for pool in self._pools.values():
            await pool.aclose()

    async def _run(self, plan: _Plan[T]) -> T:
        try:
            req = next(plan)
            while True:
                req = plan.send(await self._send(req))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _send(self, req: _Req) -> _Resp:
        try:
            async with self._http(req.url).stream(
                req.method, req.url, params=req.params, files=req.files()
            ) as resp:
                body = _Body(req.url)
                async for chunk in resp.aiter_bytes():
                    body.add(chunk)
                return body.resp(resp)
        except httpx.HTTPError as exc:
            raise _map_transport_error(exc, req.url) from None

    async def _bounded(self, plan: _Plan[T]) -> T:
        import asyncio  # only the agent's poller uses the async client: keep plugins fast

        try:
            async with asyncio.timeout(self._core.config.timeout):
                return await self._run(plan)
        except TimeoutError:
            raise PmtaTimeout(
                f"timed out after {self._core.config.timeout:g} s waiting for PowerMTA"
            ) from None

    async def status(self) -> Status:
        """`/status`."""
        return await self._bounded(self._core.status())

    async def license(self) -> License:
        """`show license` via POST /command."""
        return await self._bounded(self._core.license())

    async def snapshot(self, *, with_license: bool = False) -> Snapshot:
        """One poll: the pages fetched concurrently, within one total timeout."""
        import asyncio

        core, noted = self._core, list[str]()
        if core.format is None and core.config.flavor == "real":
            # Negotiate the format once before fanning out.
            status = await self._bounded(core.status(noted))
            queues, domains, vmtas = await asyncio.gather(
                self._bounded(core.queues(noted)),
                self._bounded(core.domains(noted)),
                self._bounded(core.vmtas(noted)),
            )
        else:
            status, queues, domains, vmtas = await asyncio.gather(
                self._bounded(core.status(noted)),
                self._bounded(core.queues(noted)),
                self._bounded(core.domains(noted)),
                self._bounded(core.vmtas(noted)),
            )
        status, lic, warnings = await self._bounded(core.extras(status, with_license))
        return _assemble(core, status, queues, domains, vmtas, lic, _by_page(noted) + warnings)


def _by_page(warnings: list[str]) -> list[str]:
    """Parser warnings grouped by page (`/status: ...`), each page's in its own order."""
    return sorted(warnings, key=lambda w: w.partition(":")[0])


def _assemble(
    core: _Core,
    status: Status,
    queues: tuple[Queue, ...],
    domains: tuple[Domain, ...],
    vmtas: tuple[Vmta, ...],
    lic: License | None,
    warnings: list[str],
) -> Snapshot:
    source = f"{core.base.rstrip('/')} ({core.config.flavor}, {core.format or 'csv'})"
    return Snapshot(
        status=status,
        queues=queues,
        domains=domains,
        vmtas=vmtas,
        license=lic,
        taken_at=datetime.now(UTC),
        source=source,
        warnings=tuple(warnings),
    )


__all__ = ["AsyncPmtaClient", "ClientConfig", "PmtaClient", "load_api_key"]
