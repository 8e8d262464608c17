# -*- test-case-name: tests.test_udp -*-
"""
Test doubles for UDP ASSOCIATE: a L{MemoryReactorClock} that can "listen"
on UDP ports (L{MemoryReactor} has no C{listenUDP}), the fake port it hands
out, and a host name resolver whose answers the test gives.

Nothing here touches the network or a real reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IListeningPort,
    IReactorUDP,
)
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

#: Where ports asked for as port 0 ("any free port") are taken from.
FIRST_EPHEMERAL_PORT = 50000


@implementer(IListeningPort)
class FakeUDPPort:
    """
    A UDP port made by L{UDPMemoryReactor.listenUDP}.

    @ivar protocol: the L{DatagramProtocol} it was made for.
    @ivar interface: the interface asked for (C{""} for the wildcard).
    @ivar port: the port number it is bound to.
    @ivar maxPacketSize: the C{maxPacketSize} asked for.
    @ivar written: C{(datagram, addr)} for every write, in order.
    @ivar stopped: whether L{stopListening} was called.
    @ivar writeError: if set, L{write} raises it instead of recording.
    """

    def __init__(
        self,
        reactor: UDPMemoryReactor,
        protocol: Any,
        interface: str,
        port: int,
        maxPacketSize: int,
    ) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.interface = interface
        self.port = port
        self.maxPacketSize = maxPacketSize
        self.written: list[tuple[bytes, Any]] = []
        self.stopped = False
        self.writeError: BaseException | None = None

    def getHost(self) -> IPv4Address | IPv6Address:
        """
        The bound address: the interface (or the wildcard of its family) and
        the port.
        """
        if ":" in self.interface:
            return IPv6Address("UDP", self.interface, self.port)
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """
        Record a datagram sent to C{addr}.
        """
        if self.stopped:
            raise RuntimeError("write on a stopped UDP port")
        if self.writeError is not None:
            raise self.writeError
        self.written.append((datagram, addr))

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Any:
        """
        Mark the port closed, free its number and stop its protocol, as a
        real port does.
        """
        if not self.stopped:
            self.stopped = True
            self.protocol.doStop()
        return succeed(None)

    def loseConnection(self) -> Any:
        return self.stopListening()


@implementer(IReactorUDP)
class UDPMemoryReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that also provides L{IReactorUDP}.

    @ivar udpPorts: every L{FakeUDPPort} made, in order.
    @ivar listenUDPCalls: C{(port, interface, maxPacketSize)} for every call
        to L{listenUDP}, including those that failed.
    @ivar busyPorts: port numbers that fail with L{CannotListenError} on
        any interface, as if another program had them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: list[FakeUDPPort] = []
        self.listenUDPCalls: list[tuple[int, str, int]] = []
        self.busyPorts: set[int] = set()
        self._nextEphemeral = FIRST_EPHEMERAL_PORT

    def _inUse(self, interface: str, port: int) -> bool:
        if port in self.busyPorts:
            return True
        return any(
            p.port == port and p.interface == interface and not p.stopped
            for p in self.udpPorts
        )

    def listenUDP(
        self,
        port: int,
        protocol: Any,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> FakeUDPPort:
        """
        "Bind" a UDP port and connect C{protocol} to it.  Port 0 takes the
        next free number from L{FIRST_EPHEMERAL_PORT} on.

        @raise CannotListenError: if C{port} is busy or already bound on
            C{interface}.
        """
        self.listenUDPCalls.append((port, interface, maxPacketSize))
        if port == 0:
            while self._inUse(interface, self._nextEphemeral):
                self._nextEphemeral += 1
            port = self._nextEphemeral
            self._nextEphemeral += 1
        elif self._inUse(interface, port):
            raise CannotListenError(interface, port, OSError(98, "Address in use"))
        udpPort = FakeUDPPort(self, protocol, interface, port, maxPacketSize)
        self.udpPorts.append(udpPort)
        protocol.makeConnection(udpPort)
        return udpPort

    def openUDPPorts(self) -> list[FakeUDPPort]:
        """
        The ports not yet stopped.
        """
        return [p for p in self.udpPorts if not p.stopped]


@implementer(IHostResolution)
class FakeResolution:
    """
    One resolution asked of a L{FakeHostnameResolver}, held until the test
    completes it.

    @ivar name: the name asked for.
    @ivar receiver: the L{IResolutionReceiver}.
    @ivar portNumber: the port passed.
    @ivar transportSemantics: C{"TCP"} or C{"UDP"}, as passed.
    @ivar done: whether L{complete} was called.
    """

    def __init__(
        self, receiver: Any, name: str, portNumber: int, transportSemantics: str
    ) -> None:
        self.receiver = receiver
        self.name = name
        self.portNumber = portNumber
        self.transportSemantics = transportSemantics
        self.done = False
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def complete(self, *hosts: str) -> None:
        """
        Give the receiver C{hosts} (IPv4 or IPv6 text, possibly none) and end
        the resolution.
        """
        self.done = True
        for host in hosts:
            if ":" in host:
                address: Any = IPv6Address("UDP", host, self.portNumber)
            else:
                address = IPv4Address("UDP", host, self.portNumber)
            self.receiver.addressResolved(address)
        self.receiver.resolutionComplete()


@implementer(IHostnameResolver)
class FakeHostnameResolver:
    """
    An L{IHostnameResolver} whose resolutions stay pending until the test
    completes them.

    @ivar resolutions: every L{FakeResolution} begun, in order.
    """

    def __init__(self) -> None:
        self.resolutions: list[FakeResolution] = []

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> FakeResolution:
        resolution = FakeResolution(
            resolutionReceiver, hostName, portNumber, transportSemantics
        )
        self.resolutions.append(resolution)
        resolutionReceiver.resolutionBegan(resolution)
        return resolution

    def pending(self) -> list[FakeResolution]:
        """
        The resolutions not yet completed.
        """
        return [r for r in self.resolutions if not r.done]


__all__ = [
    "FIRST_EPHEMERAL_PORT",
    "FakeHostnameResolver",
    "FakeResolution",
    "FakeUDPPort",
    "UDPMemoryReactor",
]
