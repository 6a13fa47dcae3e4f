"""PowerMTA HTTP management API client over httpx, sync (checks) and async (agent).

Both clients drive the same request plans: each operation is a generator that yields the HTTP
requests it needs and receives the responses (or, thrown in, the PmtaError of a request that
failed), so format negotiation, redirects, error mapping, the list commands' fallback to the
pages and parsing exist once. Only the sending differs.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zlib
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, NamedTuple, Protocol, TypeVar
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

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
    redact_url,
)
from pmta_snmp.argtypes import MAX_LIST_ITEMS
from pmta_snmp.model import (
    Domain,
    License,
    ListCompleteness,
    Lists,
    ListSource,
    Queue,
    Snapshot,
    Status,
    Vmta,
)

if TYPE_CHECKING:
    import ssl

ApiFormat = Literal["auto", "json", "xml"]
ApiFlavor = Literal["real", "seed"]
T = TypeVar("T")
_R = TypeVar("_R", Queue, Domain, Vmta)
_R_co = TypeVar("_R_co", Queue, Domain, Vmta, covariant=True)

API_KEY_ENV = "PMTA_API_KEY"
MIB = 1024 * 1024
DEFAULT_MAX_PAGE_BYTES = 64 * MIB
"""Largest answer (decoded) of one page; `pmta.max_page_mib` in the agent's configuration."""
DEFAULT_MAX_POLL_BYTES = 128 * MIB
"""Largest total of the answers (decoded) of one poll, whose pages are fetched at once;
`pmta.max_poll_mib`."""
DEFAULT_MAX_LIST_ITEMS = 10_000
"""`--maxitems` of the list commands (`pmta.max_list_items`): a list of PowerMTA's is read
whole up to this many rows, the top ones by recipients beyond (see the README)."""
PAGE_DEFAULT_ITEMS: Final = 10
"""PowerMTA's default `http-default-max-items`: rows on a listing page."""
COMMAND_RETRY_SECONDS: Final = 600.0
"""After PowerMTA refused the list commands (or answered them unreadably), lists come from the
pages this long before the commands are tried again: a refused command costs a request per
list and poll no more, a key added to PowerMTA's config later is still picked up."""
_MAX_REDIRECTS = 3
_DECODE_STEP = MIB
"""Decoded bytes per step of a compressed answer: a gzip bomb never expands by more at once."""


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


@dataclass(frozen=True, repr=False)
class ClientConfig:
    """Where and how to reach PowerMTA's HTTP management interface.

    Credentials in `url` (`http://user:password@host:port`) are sent as HTTP Basic
    authentication and shown nowhere (messages, logs, repr); nor is the API key.
    """

    url: str = "http://127.0.0.1:8080"
    api_key: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    insecure: bool = False
    api_format: ApiFormat = "auto"
    flavor: ApiFlavor = "real"
    connect_timeout: float = 5.0
    timeout: float = 10.0
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES
    max_poll_bytes: int = DEFAULT_MAX_POLL_BYTES
    max_list_items: int = DEFAULT_MAX_LIST_ITEMS
    """`--maxitems` of `show queues|domains|vmtas` via POST /command (with an API key);
    0 reads the pages even with a key."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PmtaError(f"URL {redact_url(self.url)!r} must look like http(s)://host:port")
        if self.max_page_bytes <= 0 or self.max_poll_bytes <= 0:
            raise PmtaError("the answer size limits must be positive")
        if not 0 <= self.max_list_items <= MAX_LIST_ITEMS:  # megabytes per poll already
            raise PmtaError(f"max_list_items must be 0..{MAX_LIST_ITEMS}")

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={redact_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name != "api_key"
        ]
        return f"ClientConfig({', '.join(shown)})"


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


class _CommandParser(Protocol[_R_co]):
    """`parse.parse_command_queues` and its siblings."""

    def __call__(
        self, data: parse.Node, message: str = "", *, warnings: list[str] | None = None
    ) -> tuple[tuple[_R_co, ...], tuple[int, int] | None]: ...


class Listing(NamedTuple, Generic[_R]):
    """The rows of one list as read, where from, and the list command's footer
    `(shown, total)` when it had one."""

    rows: tuple[_R, ...]
    source: ListSource
    footer: tuple[int, int] | None = None


class _Core:
    """What both clients share: request plans, format negotiation and error mapping."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        # Credentials in the URL become HTTP Basic authentication of the pools; the URL that
        # requests, messages and logs use has none.
        self.auth: tuple[str, str] | None = None
        if parts.username is not None or parts.password is not None:
            self.auth = (unquote(parts.username or ""), unquote(parts.password or ""))
        netloc = parts.netloc.rpartition("@")[2]
        self.base = parts._replace(netloc=netloc).geturl().rstrip("/") + "/"
        self.format: Literal["json", "xml"] | None = (
            None if config.api_format == "auto" else config.api_format
        )
        #: (time.monotonic(), why) of PowerMTA's last refusal of the list commands.
        self.commands_refused: tuple[float, str] | None = None

    # -- transport settings ----------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        h = {
            "User-Agent": f"pmta-snmp/{__version__}",
            "Accept": "application/json, text/xml",
            # Only what _Decoder can expand a step at a time.
            "Accept-Encoding": "gzip, deflate",
        }
        if self.config.api_key:
            h["X-API-Key"] = self.config.api_key
        return h

    def verify(self) -> ssl.SSLContext | bool:
        """The TLS settings of an https pool (loading the CA store costs ~20 ms: never for
        plain http)."""
        if self.config.insecure:
            return False
        import ssl

        try:
            return ssl.create_default_context(cafile=self.config.ca_file)
        except (OSError, ssl.SSLError) as exc:  # a missing or unreadable CA file is no bug
            reason = getattr(exc, "strerror", None) or str(exc)
            raise PmtaError(f"cannot use the CA file {self.config.ca_file}: {reason}") from None

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
            "auth": self.auth,
        }

    # -- request plans ---------------------------------------------------------------------

    def _formats(self) -> tuple[Literal["json", "xml"], ...]:
        if self.format is not None:
            return (self.format,)
        return ("json", "xml")

    def _send(self, req: _Req) -> _Plan[_Resp]:
        """Yield a request, following redirects that stay at the origin of --url (5.0 redirects
        HTTP to HTTPS on the same port); any other is refused, see `_redirect_refusal`."""
        for _ in range(_MAX_REDIRECTS + 1):
            resp = yield req
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("location", "")
            target = urljoin(req.url, location)
            old, new = urlsplit(req.url), urlsplit(target)
            refusal = _redirect_refusal(old, new) if location else "it names no target"
            if refusal:
                shown = redact_url(target) if location else "(nowhere)"
                raise PmtaHTTPError(
                    f"{old.path or '/'} redirected to {shown}: not followed, {refusal} (fix --url)",
                    resp.status,
                )
            if old.scheme == "http" and new.scheme == "https":
                # Remember the HTTPS base so later requests skip the redirect.
                self.base = f"https://{new.netloc}{urlsplit(self.base).path}"
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

    # -- complete lists: the CLI's list commands, else the pages ------------------------------

    def lists_by_command(self) -> bool:
        """Whether the lists are asked from the list commands now: an API key, a positive
        `max_list_items`, the real API, and no refusal within COMMAND_RETRY_SECONDS."""
        c = self.config
        if not c.api_key or c.max_list_items <= 0 or c.flavor != "real":
            return False
        refused = self.commands_refused
        return refused is None or time.monotonic() - refused[0] >= COMMAND_RETRY_SECONDS

    def queue_list(self, warnings: list[str] | None = None) -> _Plan[Listing[Queue]]:
        """Every queue: `show queues --maxitems=N` with an API key, else `/queues`."""
        got = yield from self._command_list("queue", parse.parse_command_queues, warnings)
        return got or Listing((yield from self.queues(warnings)), ListSource.PAGE)

    def domain_list(self, warnings: list[str] | None = None) -> _Plan[Listing[Domain]]:
        """Every domain: `show domains --maxitems=N` with an API key, else `/domains`."""
        got = yield from self._command_list("domain", parse.parse_command_domains, warnings)
        return got or Listing((yield from self.domains(warnings)), ListSource.PAGE)

    def vmta_list(self, warnings: list[str] | None = None) -> _Plan[Listing[Vmta]]:
        """Every VirtualMTA: `show vmtas --maxitems=N` with an API key, else `/vmtas`."""
        got = yield from self._command_list("vmta", parse.parse_command_vmtas, warnings)
        return got or Listing((yield from self.vmtas(warnings)), ListSource.PAGE)

    def _command_list(
        self, kind: str, read: _CommandParser[_R], warnings: list[str] | None
    ) -> _Plan[Listing[_R] | None]:
        """The rows of a list command, or None when the pages must serve: no key, or
        PowerMTA refused the command, lacks it (4.x), or answered something unreadable; the
        refusal is remembered (`commands_refused`). A timeout or a lost connection is no
        refusal: it fails the call as it would on a page."""
        if not self.lists_by_command():
            return None
        command = f"{parse.LIST_COMMANDS[kind]} --maxitems={self.config.max_list_items}"
        noted: list[str] = []
        try:
            data, message = yield from self.command(command)
            rows, footer = read(data, message, warnings=noted)
        except (PmtaTimeout, PmtaUnreachable):
            raise
        except PmtaForbidden:
            self._refused(
                "PowerMTA refused the API key for POST /command (HTTP 401/403): is it one of "
                "its http-api-key values?"
            )
            return None
        except PmtaError as exc:
            self._refused(f"{command} failed: {exc}")
            return None
        if warnings is not None:
            warnings.extend(noted)
        self.commands_refused = None  # they work (again)
        return Listing(rows, ListSource.COMMAND, footer)

    def _refused(self, why: str) -> None:
        self.commands_refused = (time.monotonic(), why)

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
    target = f"{where.scheme}://{where.netloc.rpartition('@')[2]}"
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


def _redirect_refusal(old: SplitResult, new: SplitResult) -> str | None:
    """Why a redirect from `old` to `new` is not followed, or None when it stays at the origin
    (scheme, host, port) of --url, or only moves from HTTP to HTTPS on the same host and port.
    The API key and any credentials go only there: a redirect never carries them elsewhere."""
    if new.scheme not in ("http", "https"):
        return f"a redirect to {new.scheme or 'no'} scheme"
    if old.scheme == "https" and new.scheme == "http":
        return "a downgrade from HTTPS to plain HTTP"
    if new.username is not None or new.password is not None:
        return "a redirect carrying credentials"
    if (new.hostname or "") != (old.hostname or ""):
        return "a redirect to another host (the API key is only sent to the host of --url)"
    try:
        old_port, new_port = old.port, new.port
    except ValueError:
        return "a redirect to a malformed port"
    same_port = (new_port or _DEFAULT_PORTS[new.scheme]) == (old_port or _DEFAULT_PORTS[old.scheme])
    defaults = old_port is None and new_port is None
    upgrade = (old.scheme, new.scheme) == ("http", "https") and defaults
    if not (same_port or upgrade):
        return "a redirect to another port (the API key is only sent to the port of --url)"
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Budget:
    """What one poll (or one plugin call) may still read, over all its pages at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit


class _Decoder:
    """Expands a Content-Encoding (gzip, deflate) a bounded step at a time, so the size limits
    count decoded bytes and a small compressed answer cannot expand all at once."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.strip().lower()
        self._z: Any = None
        if self.encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self._z = zlib.decompressobj()
        elif self.encoding not in ("", "identity"):
            raise PmtaMalformed(f"answer in an unsupported Content-Encoding {self.encoding!r}")
        self._started = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of `data`, in pieces of at most _DECODE_STEP."""
        if self._z is None:
            if data:
                yield data
            return
        try:
            while True:
                if self._z.eof:
                    if self.encoding == "deflate":
                        return  # the stream is complete; nothing may follow
                    data = self._z.unused_data + data  # another gzip member may follow
                    if not data:
                        return
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif not data:
                    return
                out = self._first(data)
                data = self._z.unconsumed_tail  # input held back by the step limit
                if out:
                    yield out
                while len(out) == _DECODE_STEP and not data and not self._z.eof:
                    out = self._z.decompress(b"", _DECODE_STEP)  # output still pending
                    if out:
                        yield out
        except zlib.error as exc:
            raise PmtaMalformed(f"answer with a broken {self.encoding} encoding ({exc})") from None

    def _first(self, data: bytes) -> bytes:
        if self._started or self.encoding != "deflate":
            self._started = True
            out: bytes = self._z.decompress(data, _DECODE_STEP)
            return out
        self._started = True
        try:
            out = self._z.decompress(data, _DECODE_STEP)
        except zlib.error:  # "deflate" without its zlib header, as some servers send it
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._z.decompress(data, _DECODE_STEP)
        return out


class _Body:
    """The decoded chunks of one answer, within the page limit and the poll's budget."""

    def __init__(self, url: str, config: ClientConfig, budget: _Budget) -> None:
        self.path = urlsplit(url).path or "/"
        self.limit = config.max_page_bytes
        self.budget = budget
        self.chunks: list[bytes] = []
        self.size = 0

    def start(self, resp: httpx.Response) -> _Decoder:
        """Check the announced size; the decoder of the answer's Content-Encoding."""
        length = resp.headers.get("content-length", "")
        if length.isdigit() and int(length) > min(self.limit, self.budget.left):
            self._over(int(length))
        if resp.is_stream_consumed:  # built from bytes in memory (a mock): already decoded
            return _Decoder("")
        return _Decoder(resp.headers.get("content-encoding", ""))

    @staticmethod
    def in_memory(resp: httpx.Response) -> list[bytes] | None:
        """The content of an answer built from bytes in memory (no stream to read), or None."""
        return [resp.content] if resp.is_stream_consumed else None

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.budget.left -= len(chunk)
        if self.size > self.limit or self.budget.left < 0:
            self._over(self.size)
        self.chunks.append(chunk)

    def _over(self, size: int) -> None:
        self.chunks.clear()
        if size > self.limit:
            raise PmtaMalformed(
                f"answer from {self.path} exceeds {_size(self.limit)} (the page limit, "
                "pmta.max_page_mib)"
            )
        raise PmtaMalformed(
            f"answers of one poll exceed {_size(self.budget.limit)} in all at {self.path} "
            "(the poll limit, pmta.max_poll_mib)"
        )

    def resp(self, resp: httpx.Response) -> _Resp:
        body = b"".join(self.chunks)
        self.chunks.clear()
        return _Resp(resp.status_code, resp.headers, body)


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n} bytes"


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

    @property
    def lists_by_command(self) -> bool:
        """Whether the next list is asked from a list command (an API key, not refused)."""
        return self._core.lists_by_command()

    @property
    def command_refusal(self) -> str | None:
        """Why the list commands were last refused (the pages serve meanwhile), or None."""
        refused = self._core.commands_refused
        return None if refused is None else refused[1]

    def _run(self, plan: _Plan[T], budget: _Budget | None = None) -> T:
        deadline = time.monotonic() + self._core.config.timeout
        budget = budget or _Budget(self._core.config.max_poll_bytes)
        try:
            req = next(plan)
            while True:
                try:
                    resp = self._send(req, deadline, budget)
                except PmtaError as exc:  # the plan may handle it (a list command's fallback)
                    req = plan.throw(exc)
                else:
                    req = plan.send(resp)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _send(self, req: _Req, deadline: float, budget: _Budget) -> _Resp:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PmtaTimeout(f"timed out waiting for PowerMTA ({urlsplit(req.url).path})")
        cfg = self._core.config
        timeout = httpx.Timeout(remaining, connect=min(cfg.connect_timeout, remaining))
        try:
            with self._http(req.url).stream(
                req.method, req.url, params=req.params, files=req.files(), timeout=timeout
            ) as resp:
                body = _Body(req.url, cfg, budget)
                decoder = body.start(resp)
                for chunk in body.in_memory(resp) or resp.iter_raw():
                    for part in decoder.decode(chunk):
                        body.add(part)
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

    def queue_list(
        self, status: Status | None = None
    ) -> tuple[tuple[Queue, ...], ListCompleteness]:
        """Every queue (`show queues --maxitems=N` with an API key, else `/queues`) and how
        complete the list is (`status` gives PowerMTA's counts)."""
        got = self._run(self._core.queue_list())
        return got.rows, completeness("queue", got, status, self._core.config.max_list_items)

    def domain_list(
        self, status: Status | None = None
    ) -> tuple[tuple[Domain, ...], ListCompleteness]:
        """Every domain (`show domains --maxitems=N`, else `/domains`) and how complete."""
        got = self._run(self._core.domain_list())
        return got.rows, completeness("domain", got, status, self._core.config.max_list_items)

    def vmta_list(self, status: Status | None = None) -> tuple[tuple[Vmta, ...], ListCompleteness]:
        """Every VirtualMTA (`show vmtas --maxitems=N`, else `/vmtas`) and how complete."""
        got = self._run(self._core.vmta_list())
        return got.rows, completeness("vmta", got, status, self._core.config.max_list_items)

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
        """Status, queues, domains and VirtualMTAs (and the license) as one Snapshot, within
        one byte budget (`max_poll_bytes`)."""
        core, noted = self._core, list[str]()
        budget = _Budget(core.config.max_poll_bytes)
        status = self._run(core.status(noted), budget)
        queues = self._run(core.queue_list(noted), budget)
        domains = self._run(core.domain_list(noted), budget)
        vmtas = self._run(core.vmta_list(noted), budget)
        status, lic, warnings = self._run(core.extras(status, with_license), budget)
        return _assemble(core, status, queues, domains, vmtas, lic, noted, warnings)


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

    async def _run(self, plan: _Plan[T], budget: _Budget) -> T:
        try:
            req = next(plan)
            while True:
                try:
                    resp = await self._send(req, budget)
                except PmtaError as exc:  # the plan may handle it (a list command's fallback)
                    req = plan.throw(exc)
                else:
                    req = plan.send(resp)
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _send(self, req: _Req, budget: _Budget) -> _Resp:
        try:
            async with self._http(req.url).stream(
                req.method, req.url, params=req.params, files=req.files()
            ) as resp:
                body = _Body(req.url, self._core.config, budget)
                decoder = body.start(resp)
                memory = body.in_memory(resp)
                for chunk in memory or ():
                    for part in decoder.decode(chunk):
                        body.add(part)
                if memory is None:
                    async for chunk in resp.aiter_raw():
                        for part in decoder.decode(chunk):
                            body.add(part)
                return body.resp(resp)
        except httpx.HTTPError as exc:
            raise _map_transport_error(exc, req.url) from None

    async def _bounded(self, plan: _Plan[T], budget: _Budget | None = None) -> T:
        import asyncio  # only the agent's poller uses the async client: keep plugins fast

        budget = budget or _Budget(self._core.config.max_poll_bytes)
        try:
            async with asyncio.timeout(self._core.config.timeout):
                return await self._run(plan, budget)
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
        budget = _Budget(core.config.max_poll_bytes)  # the pages arrive at once: one budget
        if core.format is None and core.config.flavor == "real":
            # Negotiate the format once before fanning out.
            status = await self._bounded(core.status(noted), budget)
            queues, domains, vmtas = await asyncio.gather(
                self._bounded(core.queue_list(noted), budget),
                self._bounded(core.domain_list(noted), budget),
                self._bounded(core.vmta_list(noted), budget),
            )
        else:
            status, queues, domains, vmtas = await asyncio.gather(
                self._bounded(core.status(noted), budget),
                self._bounded(core.queue_list(noted), budget),
                self._bounded(core.domain_list(noted), budget),
                self._bounded(core.vmta_list(noted), budget),
            )
        status, lic, warnings = await self._bounded(core.extras(status, with_license), budget)
        return _assemble(core, status, queues, domains, vmtas, lic, noted, warnings)


_WHAT = {"queue": "queues", "domain": "domains", "vmta": "VirtualMTAs"}
_PAGE_HINT = (
    "complete lists need an API key (POST /command) or a larger http-default-max-items in "
    "PowerMTA's config"
)


def completeness(
    kind: str,
    listing: Listing[Any],
    status: Status | None,
    max_list_items: int = DEFAULT_MAX_LIST_ITEMS,
) -> ListCompleteness:
    """How complete `listing` is, from what PowerMTA said: the list command's footer, fewer
    rows than `--maxitems` asked for, or `/status` (domains with mail queued: exactly that
    many domains, and at least that many queues); None for VirtualMTAs otherwise."""
    listed = len(listing.rows)
    source = listing.source
    command = f"{parse.LIST_COMMANDS[kind]} --maxitems={max_list_items}"
    if source is ListSource.COMMAND:
        if listing.footer is not None:
            return ListCompleteness(source, listed, listing.footer[1], True, f"{command} footer")
        if listed < max_list_items:
            return ListCompleteness(
                source, listed, listed, True, f"{command} (fewer rows than asked for)"
            )
    dom = status.queue_type("smtp").dom if status is not None else 0
    if kind == "vmta" or status is None or (dom == 0 and listed > 0):
        return ListCompleteness(source, listed)  # PowerMTA gave no count (or an absurd one)
    if kind == "domain":
        return ListCompleteness(source, listed, dom, True, "status.queue.smtp.dom")
    return ListCompleteness(
        source, listed, dom, False, "status.queue.smtp.dom: a queue or more per domain"
    )


def list_warning(
    kind: str,
    listing: Listing[Any],
    found: ListCompleteness,
    status: Status | None,
    max_list_items: int = DEFAULT_MAX_LIST_ITEMS,
) -> str | None:
    """The warning of a list that lacks rows (it names how many), or None."""
    what, missing = _WHAT[kind], found.missing
    where = f"/{kind}s" if found.source is ListSource.PAGE else (
        f"{parse.LIST_COMMANDS[kind]} --maxitems={max_list_items}"
    )
    hint = _PAGE_HINT if found.source is ListSource.PAGE else (
        "raise pmta.max_list_items (--max-list-items) to list them all"
    )
    if missing:
        if found.exact:
            return (f"{where}: lists {found.listed} of {found.known} {what} ({found.known_from}):"
                    f" {missing} missing; {hint}")
        return (f"{where}: lists {found.listed} {what}, PowerMTA has at least {found.known} "
                f"({found.known_from}): at least {missing} missing; {hint}")
    if found.known is None and found.listed >= PAGE_DEFAULT_ITEMS and status is not None:
        # No count (VirtualMTAs): recipients the rows lack show that rows are missing.
        held, queued = sum(r.rcp for r in listing.rows), status.queued_recipients
        if held < queued:
            return (f"{where}: lists {found.listed} {what} holding {held} of {queued} queued "
                    f"recipients, and PowerMTA gives no count of them: rows may be missing; "
                    f"{hint}")
    return None


def _by_page(warnings: list[str]) -> list[str]:
    """Parser warnings grouped by page (`/status: ...`), each page's in its own order."""
    return sorted(warnings, key=lambda w: w.partition(":")[0])


def _assemble(
    core: _Core,
    status: Status,
    queues: Listing[Queue],
    domains: Listing[Domain],
    vmtas: Listing[Vmta],
    lic: License | None,
    noted: list[str],
    warnings: list[str],
) -> Snapshot:
    source = f"{core.base.rstrip('/')} ({core.config.flavor}, {core.format or 'csv'})"
    n = core.config.max_list_items
    found = {
        kind: completeness(kind, listing, status, n)
        for kind, listing in (("queue", queues), ("domain", domains), ("vmta", vmtas))
    }
    for kind, listing in (("queue", queues), ("domain", domains), ("vmta", vmtas)):
        text = list_warning(kind, listing, found[kind], status, n)
        if text is not None:
            noted.append(text)
    refused = core.commands_refused
    by_page = any(x.source is ListSource.PAGE for x in (queues, domains, vmtas))
    if refused is not None and by_page and core.config.api_key and core.config.max_list_items:
        noted.append(f"/command: lists read from the pages instead of the list commands: "
                     f"{refused[1]}")
    return Snapshot(
        status=status,
        queues=queues.rows,
        domains=domains.rows,
        vmtas=vmtas.rows,
        license=lic,
        taken_at=datetime.now(UTC),
        source=source,
        warnings=tuple(_by_page(noted) + warnings),
        lists=Lists(queues=found["queue"], domains=found["domain"], vmtas=found["vmta"]),
    )


__all__ = [
    "AsyncPmtaClient",
    "ClientConfig",
    "Listing",
    "PmtaClient",
    "completeness",
    "list_warning",
    "load_api_key",
]
