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

The resources read and act through an L{IControlSource}: L{LocalSource} for
this process's factory, or L{socksrelay.workers.WorkerSource} for the
workers of C{--workers}.
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
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from socksrelay.interfaces import IControlSource
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


class SourceUnavailable(Exception):
    """
    An L{IControlSource} cannot answer now (a worker did not answer); the
    site says 503 with this message.
    """


@implementer(IControlSource)
class LocalSource:
    """
    The live sessions of one L{socksrelay.server.SOCKS5ServerFactory} and the
    L{Metrics} that count them.
    """

    def __init__(self, factory: Any, metrics: Metrics) -> None:
        self.factory = factory
        self.metrics = metrics

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

    def metricsText(self) -> Deferred[bytes]:
        self.metrics.refresh()
        return succeed(generate_latest(self.metrics.registry))

    def sessions(
        self, user: str | None, client: str | None, destination: str | None
    ) -> Deferred[list[dict[str, Any]]]:
        now = self.now()
        found = liveSessions(self.factory, user, client, destination)
        return succeed([describeSession(p, now) for p in found])

    def session(self, sessionId: int) -> Deferred[dict[str, Any] | None]:
        protocol = self.find(sessionId)
        return succeed(None if protocol is None else describeSession(protocol, self.now()))

    def close(self, sessionId: int, requester: str) -> Deferred[bool]:
        protocol = self.find(sessionId)
        if protocol is not None:
            closeSession(protocol, requester)
        return succeed(protocol is not None)

    def closeUser(self, user: str, requester: str) -> Deferred[list[int]]:
        closed = []
        for protocol in liveSessions(self.factory, user=user):
            closeSession(protocol, requester)
            closed.append(protocol.session.id)
        return succeed(closed)


# -- resources ---------------------------------------------------------------

#: The header in which a supervisor names who asked it to close sessions,
#: believed only by a worker's private control site.
REQUESTER_HEADER = "X-Socksrelay-Requester"


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _json(request: Request, value: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", _JSON)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value, indent=1).encode("utf-8") + b"\n"


def _respond(
    request: Request, result: Deferred[Any], render: Callable[[Any], bytes]
) -> Any:
    """
    Answer C{request} with C{render(value)} once C{result} fires with
    C{value} (at once, when it already has); a failure is a JSON 503 (for
    L{SourceUnavailable}) or 500.
    """
    gone: list[Failure] = []
    request.notifyFinish().addErrback(gone.append)

    def failed(reason: Failure) -> bytes:
        if reason.check(SourceUnavailable):
            return _json(request, {"error": str(reason.value)}, 503)
        _log.failure("control request failed", reason)
        return _json(request, {"error": "internal error"}, 500)

    def answer(body: bytes) -> None:
        if not gone:
            request.write(body)
            request.finish()

    result.addCallback(render).addErrback(failed).addCallback(answer).addErrback(
        lambda reason: _log.failure("control answer failed", reason)
    )
    return NOT_DONE_YET


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

    def render_POST(self, request: Request) -> Any:
        if _crossOrigin(request):
            return _json(request, {"error": "cross-origin request refused"}, 403)
        return self.act(request)

    def act(self, request: Request) -> Any:
        raise NotImplementedError()


class CloseSessionResource(_Action):
    """
    C{POST /sessions/ID/close}.
    """

    def __init__(self, control: ControlResource, sessionId: int) -> None:
        super().__init__(control)
        self.sessionId = sessionId

    def act(self, request: Request) -> Any:
        def render(closed: bool) -> bytes:
            if not closed:
                return _json(request, {"error": f"no live session {self.sessionId}"}, 404)
            return _json(request, {"closed": [self.sessionId]})

        source = self.control.source
        return _respond(
            request, source.close(self.sessionId, self.control.requester(request)), render
        )


class CloseUserResource(_Action):
    """
    C{POST /sessions/close?user=NAME}.
    """

    def act(self, request: Request) -> Any:
        user = _arg(request, "user")
        if user is None:
            return _json(request, {"error": "which user? (?user=NAME)"}, 400)
        closed = self.control.source.closeUser(user, self.control.requester(request))
        return _respond(request, closed, lambda ids: _json(request, {"closed": ids}))


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

    def render_GET(self, request: Request) -> Any:
        def render(session: dict[str, Any] | None) -> bytes:
            if session is None:
                return _json(request, {"error": f"no live session {self.sessionId}"}, 404)
            return _json(request, session)

        return _respond(request, self.control.source.session(self.sessionId), render)


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

    def render_GET(self, request: Request) -> Any:
        found = self.control.source.sessions(
            _arg(request, "user"), _arg(request, "client"), _arg(request, "destination")
        )
        return _respond(request, found, lambda sessions: _json(request, sessions))


class MetricsResource(_JSONResource):
    """
    C{GET /metrics}: Prometheus text.
    """

    isLeaf = True

    def __init__(self, control: ControlResource) -> None:
        super().__init__()
        self.control = control

    def render_GET(self, request: Request) -> Any:
        def render(text: bytes) -> bytes:
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
            request.setHeader(b"cache-control", b"no-store")
            return text

        return _respond(request, self.control.source.metricsText(), render)


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

    def render_GET(self, request: Request) -> Any:
        if request.postpath not in ([], [b""]):
            return _json(request, {"error": "not found"}, 404)

        def render(sessions: list[dict[str, Any]]) -> bytes:
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

        return _respond(request, self.control.source.sessions(None, None, None), render)

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

    @param source: the L{IControlSource} whose sessions and metrics are
        shown and acted on (a L{LocalSource} for one process).
    @param token: the bearer token every request must carry, or C{None}.
    @param trustRequester: believe the L{REQUESTER_HEADER} a request
        carries about who asked (only for a worker's private site, which
        only its supervisor can reach).
    """

    def __init__(
        self,
        source: IControlSource,
        token: str | None = None,
        trustRequester: bool = False,
    ) -> None:
        super().__init__()
        self.source = source
        self.trustRequester = trustRequester
        self._token = None if token is None else token.encode("utf-8")
        self.putChild(b"", PageResource(self))
        self.putChild(b"metrics", MetricsResource(self))
        self.putChild(b"sessions", SessionsResource(self))

    def requester(self, request: Request) -> str:
        """
        Who sent C{request}, for the log line of a close.
        """
        if self.trustRequester:
            named = request.getHeader(REQUESTER_HEADER)
            if named:
                return named
        return describeAddress(request.getClientAddress())

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
    private: bool = False,
) -> StreamServerEndpointService:
    """
    The service that serves metrics and the control API on C{description},
    with its L{Metrics} added to C{factory.observers}.

    @param private: serve a worker's supervisor (see L{sourceService}).
    """
    metrics = Metrics(perUser=perUser, maxUsers=maxUsers, listeningSockets=listeningSockets)
    factory.observers.append(metrics)
    return sourceService(
        LocalSource(factory, metrics), description, reactor, token, private
    )


def sourceService(
    source: IControlSource,
    description: str,
    reactor: Any,
    token: str | None = None,
    private: bool = False,
) -> StreamServerEndpointService:
    """
    The service that serves the control site of C{source} on C{description}.

    @param private: the endpoint is a worker's private socket that only its
        supervisor reaches: do not announce it, and believe the requester
        the supervisor names.
    """
    site = ControlSite(ControlResource(source, token, trustRequester=private))
    endpoint = serverFromString(reactor, description)
    if not private:
        endpoint = AnnouncingControlEndpoint(endpoint, token is not None)
    service = StreamServerEndpointService(endpoint, site)
    service.setName("control")
    return service
