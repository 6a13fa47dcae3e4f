"""Request handling: PowerMTA's paths, `http-access` checks, `POST /command`, faults.

Pure request → response logic over the simulator core; `server.py` only moves bytes. The
`/_sim/...` control paths belong to the simulator, never to PowerMTA.
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
import ipaddress
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs

from pmta_snmp import model
from pmta_snmp.sim import render
from pmta_snmp.sim.render import Node
from pmta_snmp.sim.state import SimState

FAULTS: tuple[str, ...] = ("none", "down", "reset", "slow", "500", "malformed")
"""`down`: listener closed (connection refused); `reset`: connections reset without an answer;
`slow`: answers after a delay; `500`: HTTP 500; `malformed`: broken envelopes (see VARIANTS)."""
MALFORMED_VARIANTS: tuple[str, ...] = ("truncated", "envelope", "nosucc", "garbage", "cycle")
ACCESS_LEVELS: tuple[str, ...] = ("none", "monitor", "operator", "admin")
PAGE_MAX_ITEMS = 10
"""PowerMTA's default `http-default-max-items`: rows on the `/queues`, `/domains` and `/vmtas`
pages (formats §1.1)."""
COMMAND_MAX_ITEMS = 20
"""The list commands' default `--maxitems` (formats §2)."""
_API_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request; header names are lower-case."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client_ip: str

    def param(self, name: str) -> str | None:
        """First value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(slots=True)
class Response:
    """What to send. `reset` drops the connection with a TCP reset; `after` runs once sent."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    reset: bool = False
    delay: float = 0.0
    after: Callable[[], None] | None = None


@dataclass(slots=True)
class Fault:
    """The fault currently injected."""

    name: str = "none"
    delay: float = 5.0
    variant: str = "truncated"
    served: int = 0


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One `http-access CIDR level` line."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    level: str


def parse_access(entries: Sequence[str]) -> tuple[AccessRule, ...]:
    """`"CIDR"` (monitor) or `"CIDR level"` entries, like PowerMTA's `http-access` lines."""
    rules = []
    for entry in entries:
        parts = entry.replace(",deny-logs", "").split()
        if not parts or len(parts) > 2:
            raise ValueError(f"bad access entry {entry!r}: want 'CIDR [LEVEL]'")
        level = parts[1].lower() if len(parts) == 2 else "monitor"
        if level not in ACCESS_LEVELS:
            raise ValueError(f"bad access level {level!r} in {entry!r}")
        try:
            net = ipaddress.ip_network(parts[0], strict=False)
        except ValueError as exc:
            raise ValueError(f"bad access entry {entry!r}: {exc}") from None
        rules.append(AccessRule(net, level))
    return tuple(rules)


def check_api_key(key: str) -> str:
    """PowerMTA's `http-api-key` rule: 32–128 characters of `[A-Za-z0-9_]`."""
    if not 32 <= len(key) <= 128 or not set(key) <= _API_KEY_CHARS:
        raise ValueError("an API key has 32-128 characters of [A-Za-z0-9_] (http-api-key)")
    return key


class Core(Protocol):
    """What the app needs from the simulator (implemented by `Simulator`)."""

    lock: threading.RLock
    state: SimState
    fault: Fault

    def sync(self) -> None:
        """Bring simulated time up to date with the real clock (caller holds the lock)."""

    def set_fault(
        self,
        fault: str,
        *,
        delay: float | None = None,
        variant: str | None = None,
        duration: float | None = None,
    ) -> None:
        """Switch the injected fault."""

    def advance(self, seconds: float) -> None:
        """Advance simulated time."""

    def snapshot(self) -> model.Snapshot:
        """The truth."""

    def rotate_log(self) -> Path | None:
        """Rotate the main log."""

    def rotate_acct(self) -> Path | None:
        """Rotate the accounting file."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Simulated and written record counts."""


@dataclass(frozen=True, slots=True)
class AppConfig:
    """Per-simulator settings of the HTTP side."""

    api_key: str | None = None
    access: tuple[AccessRule, ...] = ()
    seed_flavor: bool = False
    xml_content_type: str = "text/xml; charset=utf-8"
    max_items: int | None = PAGE_MAX_ITEMS
    """`http-default-max-items`: rows per listing page; None lists every row."""
    https: bool = False


@dataclass(slots=True)
class _Result:
    text: str
    data: Node | None = None
    error: str | None = None
    status: int = 200


_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("show", "license"),
    ("show", "version"),
    ("show", "status"),
    ("show", "queues"),
    ("show", "topqueues"),
    ("show", "domains"),
    ("show", "vmtas"),
    ("pause", "queue"),
    ("resume", "queue"),
    ("schedule",),
    ("rotate", "log"),
    ("rotate", "acct"),
)
_JSON = "application/json"
_PAGES = {
    "/status": "Status",
    "/queues": "Queues",
    "/domains": "Domains",
    "/vmtas": "Virtual MTAs",
    "/queueDetail": "Queue Detail",
    "/domainDetail": "Domain Detail",
}


class App:
    """Routes requests the way PowerMTA's web monitor answers them."""

    def __init__(self, core: Core, config: AppConfig) -> None:
        self.core = core
        self.config = config
        ctype = config.xml_content_type
        self.xml_ctype = ctype if "charset" in ctype else f"{ctype}; charset=utf-8"

    # ------------------------------------------------------------------------------- entry
    def handle(self, req: Request) -> Response:
        """Answer one request, with the current fault applied."""
        if req.path.startswith("/_sim/"):
            return self._control(req)
        fault = self.core.fault
        if fault.name == "reset":
            return Response(0, reset=True)
        if fault.name == "500":
            return Response(500, render.html_page("Internal Server Error", "500"))
        resp = self._route(req)
        if fault.name == "slow":
            resp.delay = fault.delay
        elif (
            fault.name == "malformed"
            and resp.status == 200
            and resp.body.startswith((b"<rsp>", b"{"))
        ):
            variant = fault.variant
            if variant == "cycle":
                variant = MALFORMED_VARIANTS[fault.served % 4]
                fault.served += 1
            resp.body = _corrupt(resp.body, variant)
        return resp

    def _route(self, req: Request) -> Response:
        state = self.core.state
        if req.method == "POST":
            if req.path == "/command":
                return self._command(req)
            return Response(405, render.html_page("Method Not Allowed", req.path))
        if req.path in ("/", "/ui"):
            if req.path == "/" and state.profile == "5.0":
                return Response(302, headers=(("Location", "/ui"),))  # 5.0: / → /ui (UG)
            if self._level(req) == "none":
                return _forbidden()
            return Response(200, render.html_page("PowerMTA", {"pages": list(_PAGES)}))
        if req.path in _PAGES or (self.config.seed_flavor and req.path in _SEED_PATHS):
            if self._level(req) == "none":
                return _forbidden()
            with self.core.lock:
                self.core.sync()
                if req.path in _PAGES:
                    return self._page(req)
                return self._seed(req)
        return Response(404, render.html_page("Not Found", req.path))

    # ------------------------------------------------------------------------------ access
    def _key_valid(self, req: Request) -> bool:
        sent = req.headers.get("x-api-key")
        key = self.config.api_key
        return bool(key and sent and hmac.compare_digest(sent.encode(), key.encode()))

    def _level(self, req: Request) -> str:
        """`http-access`: first matching rule wins, no match is `none`; a valid key is admin."""
        if self._key_valid(req):
            return "admin"
        try:
            ip = ipaddress.ip_address(req.client_ip)
        except ValueError:
            return "none"
        for rule in self.config.access:
            if ip in rule.network:
                return rule.level
        return "none"

    # ------------------------------------------------------------------------------- pages
    def _page(self, req: Request) -> Response:
        state = self.core.state
        fmt = (req.param("format") or "").lower()
        if fmt == "json" and state.profile == "4.x":
            fmt = ""  # 4.x has no JSON: it ignores the parameter and serves the HTML page
        fmt = fmt if fmt in ("xml", "json") else "html"
        key = (req.path, tuple(sorted((k, tuple(v)) for k, v in req.query.items())), fmt)
        cached = state.cache.get(key)
        if isinstance(cached, Response):
            return Response(cached.status, cached.body, cached.content_type)
        data = self._page_data(req)
        title = _PAGES[req.path]
        if data is None:
            message = f"not found: {req.param('queue') or req.param('domain') or ''}"
            resp = self._error(fmt, message, 404)
        elif fmt == "xml":
            resp = Response(200, render.xml_body(data), self.xml_ctype)
        elif fmt == "json":
            resp = Response(200, render.json_body(data), _JSON)
        else:
            resp = Response(200, render.html_page(title, data))
        if req.path != "/status":  # /status carries timeNow, which moves between ticks
            state.cache[key] = resp
        return Response(resp.status, resp.body, resp.content_type)

    def _page_data(self, req: Request) -> Node | None:
        state = self.core.state
        limit = self.config.max_items
        if req.path == "/status":
            return render.status_data(state, web_protocol="https" if self.config.https else "http")
        if req.path == "/queues":
            return render.queues_data(state, req.param("queue"), limit)
        if req.path == "/domains":
            return render.domains_data(state, limit)
        if req.path == "/vmtas":
            return render.vmtas_data(state, limit)
        if req.path == "/queueDetail":
            return render.queue_detail_data(state, req.param("queue") or "")
        return render.domain_detail_data(state, req.param("domain") or "")

    def _error(self, fmt: str, message: str, status: int) -> Response:
        if fmt == "json":
            return Response(status, render.json_error(message), _JSON)
        if fmt in ("xml", "xml-text"):
            return Response(status, render.xml_error(message), self.xml_ctype)
        return Response(status, render.html_page("Error", message))

    def _seed(self, req: Request) -> Response:
        # NOT POWERMTA: the blog-post ("seed") endpoints, served only with seed_flavor on.
        state = self.core.state
        if req.path == "/status.json":
            return Response(200, render.seed_status_json(state), _JSON)
        if req.path == "/queue.csv":
            body = render.seed_queue_csv(state, req.param("domain"))
        elif req.path == "/domain.csv":
            body = render.seed_domain_csv(state)
        else:
            body = render.seed_vmta_csv(state)
        return Response(200, body, "text/csv; charset=utf-8")

    # ----------------------------------------------------------------------------- command
    def _command(self, req: Request) -> Response:
        """`POST /command` (UG §8.3): form fields `command`, `format`.

        With an API key configured: a valid `X-API-Key`, or an operator/admin `http-access`
        entry; else 401 (no key sent) or 403 (wrong key). Without one, any admitted address
        may run commands (a simulator convenience; real PowerMTA wants operator level).
        """
        state = self.core.state
        if self.config.api_key is not None and not self._key_valid(req):
            level = self._level(req)
            if level not in ("operator", "admin"):
                if "x-api-key" in req.headers:
                    return _forbidden()
                return Response(401, render.html_page("Unauthorized", "X-API-Key required"))
        elif self._level(req) == "none":
            return _forbidden()
        form = parse_form(req)
        default = "xml-text" if state.profile == "4.x" else "json-text"
        fmt = (form.get("format") or default).lower()
        if fmt not in ("json", "xml", "json-text", "xml-text"):
            return self._error("html", f"unsupported format {fmt!r}", 400)
        if state.profile == "4.x" and fmt.startswith("json"):
            return self._error("html", "unsupported format (no JSON before 5.0)", 400)
        with self.core.lock:
            self.core.sync()
            res = self._run(form.get("command", ""))
        if res.error is not None:
            return self._error(fmt.split("-")[0], res.error, res.status)
        ctype = _JSON if fmt.startswith("json") else self.xml_ctype
        if fmt == "json":
            return Response(200, render.json_body(res.data or {}, res.text), ctype)
        if fmt == "json-text":
            return Response(200, render.json_body(res.text), ctype)
        # [?] The XML form of /command is undocumented: `xml` carries the --xml object and no
        # text, `xml-text` carries the text as the data element's content.
        if fmt == "xml":
            return Response(200, render.xml_body(res.data or {}), ctype)
        return Response(200, render.xml_body(res.text), ctype)

    def _run(self, command: str) -> _Result:
        words = command.split()
        opts: dict[str, str] = {}
        for w in words:
            if w.startswith("--"):
                name, _, value = w[2:].partition("=")
                opts[name] = value
        words = [w for w in words if not w.startswith("--")]
        if not words:
            return _Result("", error="no command given", status=400)
        if words[0].lower() in ("register", "deregister"):
            return _Result("", error=f"{words[0]} is not available over HTTP", status=400)
        matches = [
            c
            for c in _COMMANDS
            if len(words) >= len(c)
            and all(c[i].startswith(words[i].lower()) for i in range(len(c)))
        ]
        exact = [c for c in matches if all(c[i] == words[i].lower() for i in range(len(c)))]
        if len(matches) != 1 and len(exact) != 1:
            why = "ambiguous" if matches else "unknown"
            return _Result("", error=f"{why} command: {command.strip()!r}", status=400)
        cmd = exact[0] if len(exact) == 1 else matches[0]
        args = words[len(cmd) :]
        state = self.core.state
        try:
            max_items = int(opts.get("maxitems") or COMMAND_MAX_ITEMS)
        except ValueError:
            return _Result("", error="bad --maxitems", status=400)
        if cmd == ("show", "license"):
            return _Result(state.license.text(), dict(state.license.fields))
        if cmd == ("show", "version"):
            p = state.product
            # [?] the --json object of `show version` is unknown: mirrors status mta/product.
            return _Result(
                p.version_text() + "\n",
                {
                    "product": {
                        "name": "PowerMTA",
                        "version": p.version,
                        "buildDate": p.build_date,
                        "revision": p.revision,
                        "bits": p.bits,
                    }
                },
            )
        if cmd == ("show", "status"):
            return _Result(render.show_status_text(state), render.status_data(state))
        if cmd in (("show", "queues"), ("show", "topqueues")):
            pattern = args[0] if args else None
            return _Result(
                render.show_queues_text(state, pattern, max_items),
                render.queues_data(state, pattern, max_items),
            )
        if cmd == ("show", "domains"):
            return _Result(
                render.show_domains_text(state, max_items), render.domains_data(state, max_items)
            )
        if cmd == ("show", "vmtas"):
            return _Result(
                render.show_vmtas_text(state, max_items), render.vmtas_data(state, max_items)
            )
        if cmd[0] in ("pause", "resume", "schedule"):
            if not args:
                return _Result("", error=f"{' '.join(cmd)}: a queue is required", status=400)
            queues = state.match(args[0])
            if not queues:
                return _Result("", error=f"no queue matches {args[0]!r}", status=400)
            if cmd[0] == "schedule":
                state.schedule(queues)
                return _Result("Queue(s) scheduled.\n", {})  # [?] wording undocumented
            state.set_paused(queues, cmd[0] == "pause")
            return _Result(f"Queue(s) {'paused' if cmd[0] == 'pause' else 'resumed'}.\n", {})
        if cmd == ("rotate", "log"):
            self.core.rotate_log()
            return _Result("Log file rotated.\n", {})  # [?] wording undocumented
        self.core.rotate_acct()
        return _Result("Accounting file(s) rotated.\n", {})  # [?] wording undocumented

    # ------------------------------------------------------------------------------ control
    def _control(self, req: Request) -> Response:
        """NOT POWERMTA: the simulator's own loopback-only control endpoint."""
        if not ipaddress.ip_address(req.client_ip).is_loopback:
            return _forbidden()
        form = parse_form(req) if req.method == "POST" else {}
        try:
            if req.path == "/_sim/fault" and req.method == "POST":
                name = form.get("fault", "")
                delay = float(form["delay"]) if form.get("delay") else None
                duration = float(form["duration"]) if form.get("duration") else None
                if name == "down" and duration is None:
                    raise ValueError(
                        "fault=down over HTTP needs duration= (seconds), "
                        "since this endpoint goes down with it"
                    )
                _check_fault(name, form.get("variant"))
                variant = form.get("variant")

                def after() -> None:
                    self.core.set_fault(name, delay=delay, variant=variant, duration=duration)

                if name != "down":
                    after()
                    return _ok({"fault": name})
                return Response(200, _ok({"fault": name}).body, _JSON, after=after)
            if req.path == "/_sim/advance" and req.method == "POST":
                self.core.advance(float(form.get("seconds", "0")))
                return _ok({"now": self.core.state.fmt(self.core.state.now)})
            if req.path == "/_sim/rotate" and req.method == "POST":
                what = form.get("what", "log")
                path = self.core.rotate_log() if what == "log" else self.core.rotate_acct()
                return _ok({"rotated": str(path) if path else None})
            if req.path == "/_sim/snapshot" and req.method == "GET":
                return _ok(model.snapshot_to_dict(self.core.snapshot()))
            if req.path == "/_sim/counts" and req.method == "GET":
                return _ok(self.core.counts())
        except (ValueError, KeyError) as exc:
            return Response(400, json.dumps({"error": str(exc)}).encode(), _JSON)
        return Response(404, json.dumps({"error": "unknown control path"}).encode(), _JSON)


_SEED_PATHS = frozenset({"/status.json", "/queue.csv", "/domain.csv", "/vmta.csv"})


def _check_fault(name: str, variant: str | None) -> None:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")
    if variant is not None and variant not in MALFORMED_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {', '.join(MALFORMED_VARIANTS)}")


def _ok(data: object) -> Response:
    return Response(200, json.dumps(data, ensure_ascii=False).encode(), _JSON)


def _forbidden() -> Response:
    """`http-access` refusal: 403."""
    return Response(403, render.html_page("Forbidden", "Access denied by http-access."))


def _corrupt(body: bytes, variant: str) -> bytes:
    """Break an XML/JSON envelope the way a failing or foreign server might."""
    if variant == "truncated":
        return body[: max(1, len(body) // 2)]
    if variant == "garbage":
        return b"\x00\x01\xffnot a PowerMTA answer"
    if body.startswith(b"{"):
        env = json.loads(body)
        if variant == "envelope":
            return json.dumps({"result": env.get("data"), "ok": True}).encode()
        env.pop("status", None)  # nosucc
        return json.dumps(env, ensure_ascii=False).encode()
    if variant == "envelope":
        return body.replace(b"<rsp>", b"<response>", 1).replace(b"</rsp>", b"</response>")
    return body.replace(b"<succ/>", b"")  # nosucc


def parse_form(req: Request) -> dict[str, str]:
    """Form fields of a POST body, urlencoded or multipart/form-data."""
    body = req.body[:_MAX_BODY]
    ctype = req.headers.get("content-type", "")
    if ctype.lower().startswith("multipart/form-data"):
        head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields: dict[str, str] = {}
        if msg.is_multipart():
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    fields[name] = payload.decode("utf-8", "replace")
        return fields
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}
