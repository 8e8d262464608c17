# -*- test-case-name: tests.test_control -*-
"""
The metrics and control endpoint (C{--metrics ENDPOINT}): a small
L{twisted.web} site.

  - C{GET /metrics}: Prometheus text (L{socksrelay.metrics}).
  - C{GET /sessions}: the live sessions as JSON, filtered by C{?user=}
    (exactly), C{?client=} and C{?destination=} (parts of them).
  - C{GET /sessions/ID}: one live session.
  - C{POST /sessions/ID/close}: close one session.
  - C{POST /sessions/close?user=NAME}: close every session of a user.
  - C{GET /}: an HTML page of the live sessions and their throughput that
    updates itself.

Each close is logged with the address that asked for it.  With a token
(C{--control-token-file}), every path answers 401 unless the request carries
C{Authorization: Bearer TOKEN}.
"""

from __future__ import annotations

import hmac
import html
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from socksrelay.listening import AnnouncingEndpoint
from socksrelay.metrics import Metrics
from socksrelay.relay import describeAddress

_log = Logger(namespace="socksrelay.control")

#: How often the page asks for the sessions, in milliseconds.
PAGE_REFRESH_MS = 2000

_JSON = b"application/json; charset=utf-8"


# -- options -----------------------------------------------------------------


def parseControlEndpoint(description: str) -> str:
    """
    Check a C{--metrics} endpoint description; a bare port number means
    127.0.0.1 only.

    @raise ValueError: if Twisted cannot parse it.
    """
    from twisted.internet.testing import MemoryReactor

    description = description.strip()
    if description.isdigit():
        description = f"tcp:{int(description)}:interface=127.0.0.1"
    serverFromString(MemoryReactor(), description)
    return description


class TokenFile:
    """
    The bearer token read from C{--control-token-file}; its C{repr} shows
    the path, never the token.

    @ivar path: the file.
    @ivar token: its content without surrounding white space.
    """

    def __init__(self, path: str, token: str) -> None:
        self.path = path
        self.token = token

    def __repr__(self) -> str:
        return f"TokenFile({self.path!r})"


def readTokenFile(path: str) -> TokenFile:
    """
    Read a bearer token from C{path}.

    @raise ValueError: if the file cannot be read or holds no token.
    """
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not token:
        raise ValueError(f"{path} holds no token")
    if any(c.isspace() for c in token):
        raise ValueError(f"the token in {path} has white space inside it")
    return TokenFile(path, token)


# -- sessions ----------------------------------------------------------------


def describeSession(protocol: Any, now: float) -> dict[str, Any]:
    """
    The JSON object for one live session.
    """
    session = protocol.session
    return {
        "id": session.id,
        "client": session.client,
        "listener": session.listener,
        "user": session.user,
        "protocol": session.protocol,
        "command": session.command,
        "destination": session.destination,
        "resolved": session.resolved,
        "started": session.started,
        "duration": round(max(0.0, now - session.started), 3),
        "bytesUp": session.bytesUp,
        "bytesDown": session.bytesDown,
    }


def liveSessions(
    factory: Any,
    user: str | None = None,
    client: str | None = None,
    destination: str | None = None,
) -> list[Any]:
    """
    The live client protocols of C{factory} in session order, those of
    C{user} only (exactly) and whose client and destination contain
    C{client} and C{destination}, when given.
    """
    found = []
    for protocol in factory.live:
        session = getattr(protocol, "session", None)
        if session is None:
            continue
        if user is not None and session.user != user:
            continue
        if client is not None and client not in session.client:
            continue
        if destination is not None and destination not in (session.destination or ""):
            continue
        found.append(protocol)
    return sorted(found, key=lambda p: p.session.id)


def closeSession(protocol: Any, requester: str) -> None:
    """
    Close a live session (both its connections, after flushing) because
    C{requester} asked, with a log line naming them.
    """
    session = protocol.session
    _log.info(
        "control: closing session {sessionId} of {client} (user {user}) to "
        "{destination}, as asked by {requester}",
        sessionId=session.id,
        client=session.client,
        user=session.user,
        destination=session.destination,
        requester=requester,
    )
    session.noteClose(f"closed by control request from {requester}")
    protocol.closeGently()
    if protocol.peer is not None:
        protocol.peer.closeGently()


# -- resources ---------------------------------------------------------------


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _requester(request: Request) -> str:
    return describeAddress(request.getClientAddress())


def _json(request: Request, value: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", _JSON)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value, indent=1).encode("utf-8") + b"\n"


class _JSONResource(Resource):
    """
    A resource that answers a method it does not serve with a JSON 405.
    """

    def render(self, request: Request) -> bytes:
        method = (request.method or b"").decode("ascii", "replace")
        served = {
            name[len("render_") :]
            for name in dir(self)
            if name.startswith("render_") and name[len("render_") :].isupper()
        }
        served.discard("HEAD")
        if "GET" in served:
            served.add("HEAD")
        handler = None
        if method in served:
            handler = getattr(self, f"render_{'GET' if method == 'HEAD' else method}")
        if handler is None:
            allowed = sorted(served)
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
            return _json(request, {"error": f"method {method} not allowed"}, 405)
        return handler(request)  # type: ignore[no-any-return]


class ErrorResource(Resource):
    """
    A JSON error answer for every method.
    """

    isLeaf = True

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self.code = code
        self.message = message

    def render(self, request: Request) -> bytes:
        if self.code == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="socksrelay"')
        return _json(request, {"error": self.message}, self.code)


def _crossOrigin(request: Request) -> bool:
    """
    Whether a browser sent this request from another site's page (which
    must not close sessions).
    """
    origin = request.getHeader("origin")
    if origin is None:
        return False
    host = request.getHeader("host")
    return host is None or urlsplit(origin).netloc != host


class _Action(_JSONResource):
    """
    A POST that changes something: refused when a browser sends it from
    another site.
    """

    isLeaf = True

    def __init__(self, control: ControlResource) -> None:
        super().__init__()
        self.control = control

    def render_POST(self, request: Request) -> bytes:
        if _crossOrigin(request):
            return _json(request, {"error": "cross-origin request refused"}, 403)
        return self.act(request)

    def act(self, request: Request) -> bytes:
        raise NotImplementedError()


class CloseSessionResource(_Action):
    """
    C{POST /sessions/ID/close}.
    """

    def __init__(self, control: ControlResource, sessionId: int) -> None:
        super().__init__(control)
        self.sessionId = sessionId

    def act(self, request: Request) -> bytes:
        protocol = self.control.find(self.sessionId)
        if protocol is None:
            return _json(request, {"error": f"no live session {self.sessionId}"}, 404)
        closeSession(protocol, _requester(request))
        return _json(request, {"closed": [self.sessionId]})


class CloseUserResource(_Action):
    """
    C{POST /sessions/close?user=NAME}.
    """

    def act(self, request: Request) -> bytes:
        user = _arg(request, "user")
        if user is None:
            return _json(request, {"error": "which user? (?user=NAME)"}, 400)
        requester = _requester(request)
        closed = []
        for protocol in liveSessions(self.control.factory, user=user):
            closeSession(protocol, requester)
            closed.append(protocol.session.id)
        return _json(request, {"closed": closed})


class SessionResource(_JSONResource):
    """
    C{GET /sessions/ID}, and C{close} below it.
    """

    def __init__(self, control: ControlResource, sessionId: int) -> None:
        super().__init__()
        self.control = control
        self.sessionId = sessionId

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"close":
            return CloseSessionResource(self.control, self.sessionId)
        if path == b"":
            return self
        return ErrorResource(404, "not found")

    def render_GET(self, request: Request) -> bytes:
        protocol = self.control.find(self.sessionId)
        if protocol is None:
            return _json(request, {"error": f"no live session {self.sessionId}"}, 404)
        return _json(request, describeSession(protocol, self.control.now()))


class SessionsResource(_JSONResource):
    """
    C{GET /sessions}: the live sessions as a JSON list.
    """

    def __init__(self, control: ControlResource) -> None:
        super().__init__()
        self.control = control

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        if path == b"close":
            return CloseUserResource(self.control)
        if path.isdigit():
            return SessionResource(self.control, int(path))
        return ErrorResource(404, "not found")

    def render_GET(self, request: Request) -> bytes:
        now = self.control.now()
        found = liveSessions(
            self.control.factory,
            user=_arg(request, "user"),
            client=_arg(request, "client"),
            destination=_arg(request, "destination"),
        )
        return _json(request, [describeSession(p, now) for p in found])


class MetricsResource(_JSONResource):
    """
    C{GET /metrics}: Prometheus text.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        self.metrics.refresh()
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self.metrics.registry)


_PAGE_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
#summary { margin: 0 0 1em; color: #444; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd;
  white-space: nowrap; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.empty td { color: #888; font-style: italic; }
button { font-size: .9em; }
"""

_PAGE_SCRIPT = """
"use strict";
(function () {
  const rows = document.getElementById("rows");
  const summary = document.getElementById("summary");
  let previous = new Map();
  let previousTime = null;
  function size(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }
  function cell(row, text, numeric) {
    const td = row.insertCell();
    td.textContent = text === null || text === undefined ? "-" : String(text);
    if (numeric) td.className = "n";
  }
  function closeSession(id) {
    fetch("sessions/" + id + "/close", {method: "POST"}).then(poll, poll);
  }
  function render(sessions) {
    const now = performance.now() / 1000;
    const elapsed = previousTime === null ? 0 : now - previousTime;
    let totalUp = 0, totalDown = 0;
    rows.replaceChildren();
    for (const s of sessions) {
      const before = previous.get(s.id);
      let up = null, down = null;
      if (before && elapsed > 0) {
        up = Math.max(0, s.bytesUp - before.bytesUp) / elapsed;
        down = Math.max(0, s.bytesDown - before.bytesDown) / elapsed;
        totalUp += up;
        totalDown += down;
      }
      const row = rows.insertRow();
      row.dataset.id = s.id;
      cell(row, s.id, true);
      cell(row, s.client);
      cell(row, s.user);
      cell(row, s.protocol);
      cell(row, s.command);
      cell(row, s.destination);
      cell(row, s.duration.toFixed(1) + " s", true);
      cell(row, size(s.bytesUp), true);
      cell(row, size(s.bytesDown), true);
      cell(row, up === null ? "-" : size(up) + "/s", true);
      cell(row, down === null ? "-" : size(down) + "/s", true);
      const button = document.createElement("button");
      button.textContent = "close";
      button.addEventListener("click", function () { closeSession(s.id); });
      row.insertCell().appendChild(button);
    }
    if (!sessions.length) {
      const row = rows.insertRow();
      row.className = "empty";
      const td = row.insertCell();
      td.colSpan = 12;
      td.textContent = "no live sessions";
    }
    previous = new Map(sessions.map(function (s) { return [s.id, s]; }));
    previousTime = now;
    summary.textContent = sessions.length +
      (sessions.length === 1 ? " live session" : " live sessions") + "; throughput up " +
      size(totalUp) + "/s, down " + size(totalDown) + "/s; updated " +
      new Date().toLocaleTimeString();
  }
  function poll() {
    fetch("sessions", {cache: "no-store"}).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(render, function (e) {
      summary.textContent = "update failed: " + e.message;
    });
  }
  poll();
  setInterval(poll, %(interval)d);
})();
"""

_COLUMNS = (
    "id",
    "client",
    "user",
    "protocol",
    "command",
    "destination",
    "duration",
    "up",
    "down",
    "up/s",
    "down/s",
    "",
)


class PageResource(_JSONResource):
    """
    C{GET /}: the live sessions as an HTML table, filled in on the server
    and then updated every two seconds from C{/sessions} (with a plain
    refresh for browsers without scripts).  No external assets.
    """

    isLeaf = True

    def __init__(self, control: ControlResource) -> None:
        super().__init__()
        self.control = control

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            return _json(request, {"error": "not found"}, 404)
        now = self.control.now()
        sessions = [
            describeSession(p, now) for p in liveSessions(self.control.factory)
        ]
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(
            b"content-security-policy",
            b"default-src 'none'; script-src 'unsafe-inline'; "
            b"style-src 'unsafe-inline'; connect-src 'self'; "
            b"frame-ancestors 'none'",
        )
        return self.page(sessions).encode("utf-8")

    def page(self, sessions: list[dict[str, Any]]) -> str:
        """
        The HTML for these sessions.
        """
        e = html.escape

        def text(value: Any) -> str:
            return "-" if value is None else e(str(value))

        body = []
        for s in sessions:
            cells = [
                f'<td class="n">{s["id"]}</td>',
                *(
                    f"<td>{text(s[key])}</td>"
                    for key in ("client", "user", "protocol", "command", "destination")
                ),
                f'<td class="n">{s["duration"]:.1f} s</td>',
                f'<td class="n">{s["bytesUp"]} B</td>',
                f'<td class="n">{s["bytesDown"]} B</td>',
                '<td class="n">-</td>',
                '<td class="n">-</td>',
                "<td></td>",
            ]
            body.append(f'<tr data-id="{s["id"]}">{"".join(cells)}</tr>')
        if not sessions:
            body.append(
                f'<tr class="empty"><td colspan="{len(_COLUMNS)}">no live sessions'
                "</td></tr>"
            )
        head = "".join(f"<th>{e(c)}</th>" for c in _COLUMNS)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            "<title>socksrelay: live sessions</title>"
            f"<noscript><meta http-equiv=\"refresh\" content=\"{PAGE_REFRESH_MS // 1000}\">"
            "</noscript>"
            f"<style>{_PAGE_STYLE}</style></head><body>"
            "<h1>socksrelay: live sessions</h1>"
            f'<p id="summary">{len(sessions)} live session{"" if len(sessions) == 1 else "s"}</p>'
            f'<table id="sessions"><thead><tr>{head}</tr></thead>'
            f'<tbody id="rows">{"".join(body)}</tbody></table>'
            f"<script>{_PAGE_SCRIPT % {'interval': PAGE_REFRESH_MS}}</script>"
            "</body></html>\n"
        )


class ControlResource(Resource):
    """
    The root of the metrics and control site.

    @param factory: the L{socksrelay.server.SOCKS5ServerFactory} whose
        C{live} sessions are shown and closed.
    @param metrics: the L{Metrics} served at C{/metrics}.
    @param token: the bearer token every request must carry, or C{None}.
    """

    def __init__(self, factory: Any, metrics: Metrics, token: str | None = None) -> None:
        super().__init__()
        self.factory = factory
        self.metrics = metrics
        self._token = None if token is None else token.encode("utf-8")
        self.putChild(b"", PageResource(self))
        self.putChild(b"metrics", MetricsResource(metrics))
        self.putChild(b"sessions", SessionsResource(self))

    def now(self) -> float:
        return float(self.factory.reactor.seconds())

    def find(self, sessionId: int) -> Any:
        """
        The live protocol whose session has this id, or C{None}.
        """
        for protocol in self.factory.live:
            session = getattr(protocol, "session", None)
            if session is not None and session.id == sessionId:
                return protocol
        return None

    def authorized(self, request: Request) -> bool:
        """
        Whether C{request} may see anything: always without a token, or with
        C{Authorization: Bearer TOKEN} (compared in constant time).
        """
        if self._token is None:
            return True
        value = request.getHeader("authorization") or ""
        scheme, _, given = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8"), self._token)

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        if not self.authorized(request):
            return ErrorResource(401, "a valid bearer token is required")
        child = self.children.get(path)
        if child is not None:
            return child
        return ErrorResource(404, "not found")


class ControlSite(Site):
    """
    The site, without a request log line per scrape (closes are logged by
    L{closeSession}).
    """

    displayTracebacks = False
    noisy = False

    def log(self, request: Request) -> None:
        pass


class AnnouncingControlEndpoint(AnnouncingEndpoint):
    """
    The metrics and control listener: says where it listens, and warns when
    it listens beyond loopback without a token.
    """

    what = "metrics and control on"
    warning = (
        "WARNING: the metrics and control endpoint listens on "
        "{address} without --control-token-file: anyone who can "
        "reach it can list and close sessions."
    )

    def __init__(self, endpoint: IStreamServerEndpoint, hasToken: bool) -> None:
        super().__init__(endpoint, warn=not hasToken)


def controlService(
    factory: Any,
    description: str,
    reactor: Any,
    perUser: bool = False,
    maxUsers: int = 100,
    token: str | None = None,
    listeningSockets: Callable[[], int] | None = None,
) -> StreamServerEndpointService:
    """
    The service that serves metrics and the control API on C{description},
    with its L{Metrics} added to C{factory.observers}.
    """
    metrics = Metrics(perUser=perUser, maxUsers=maxUsers, listeningSockets=listeningSockets)
    factory.observers.append(metrics)
    site = ControlSite(ControlResource(factory, metrics, token))
    endpoint = AnnouncingControlEndpoint(
        serverFromString(reactor, description), token is not None
    )
    service = StreamServerEndpointService(endpoint, site)
    service.setName("control")
    return service
