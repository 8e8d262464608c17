# -*- test-case-name: tests.test_tap -*-
"""
Listening sockets that say where they listen, and warn when a listener
that should stay local is reachable from the network.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable

from zope.interface import implementer

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger

from socksrelay.relay import describeAddress
from socksrelay.wire import normaliseAddress

_log = Logger(namespace="socksrelay.tap")


def isLoopback(address: Any) -> bool:
    """
    Whether a listening address is reachable only from this host: a
    loopback IP, or a UNIX socket.
    """
    host = getattr(address, "host", None)
    if host is None:
        return getattr(address, "name", None) is not None
    try:
        return ipaddress.ip_address(normaliseAddress(host)).is_loopback
    except ValueError:
        return False


#: The endpoint types whose parsers take C{backlog=}.
BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})

#: Endpoint types that wrap the endpoint described after them.
WRAPPER_TYPES = frozenset({"haproxy"})


def withBacklog(description: str, backlog: int) -> str:
    """
    Return the server endpoint C{description} with C{backlog=BACKLOG}
    added, for the types that take one (C{tcp}, C{tcp6}, C{ssl}, C{unix},
    and those inside C{haproxy:}); a description that sets C{backlog=}
    itself, or of another type (C{systemd:}, plugins), is returned as it
    is.
    """
    # Parameters are separated by colons not escaped with a backslash.
    fields = re.split(r"(?<!\\):", description)
    if any(f.strip().lower().startswith("backlog=") for f in fields[1:]):
        return description
    types = [f.strip().lower() for f in fields]
    index = 0
    while index < len(types) - 1 and types[index] in WRAPPER_TYPES:
        index += 1
    if types[index] not in BACKLOG_TYPES:
        return description
    return f"{description}:backlog={backlog}"


@implementer(IStreamServerEndpoint)
class AnnouncingEndpoint:
    """
    A server endpoint that logs C{<what> HOST port PORT<suffix>} once it
    listens, and logs C{warning} (formatted with C{address}) when C{warn} is
    true and it listens beyond loopback.

    @ivar ports: the ports it listens on.
    @ivar onListening: called with the address of each port it listens on
        (such as L{socksrelay.ownports.OwnListeners.add}).
    """

    what = "listening on"
    suffix = ""
    warning = ""

    def __init__(self, endpoint: IStreamServerEndpoint, warn: bool) -> None:
        self._endpoint = endpoint
        self._warn = warn
        self.ports: list[IListeningPort] = []
        self.onListening: list[Callable[[Any], None]] = []

    @property
    def listening(self) -> int:
        """
        How many of its ports listen now (for the metrics).
        """
        return sum(1 for port in self.ports if getattr(port, "connected", True))

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        def announce(port: IListeningPort) -> IListeningPort:
            self.ports.append(port)
            address = port.getHost()
            for notify in self.onListening:
                notify(address)
            host = getattr(address, "host", None)
            if host is not None:
                _log.info(
                    self.what + " {host} port {port}" + self.suffix,
                    host=normaliseAddress(host),
                    port=address.port,  # type: ignore[attr-defined]
                )
            else:
                _log.info(self.what + " {address}" + self.suffix, address=address)
            if self._warn and self.warning and not isLoopback(address):
                _log.warn(self.warning, address=describeAddress(address))
            return port

        return self._endpoint.listen(protocolFactory).addCallback(announce)
