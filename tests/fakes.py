# -*- test-case-name: tests.test_server -*-
"""
Test doubles shared by socksrelay's unit tests: raw SOCKS5 client messages,
recording transports, controllable outbound endpoints, cred checkers whose
answers the test decides, a fake DNS resolver, fake listening endpoints, and
the one place that uses L{twisted.test.iosim}.

Nothing here touches the network or a real reactor.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, Callable

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IListeningPort,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.names import dns
from twisted.python.failure import Failure
from twisted.test import iosim

from socksrelay.server import SOCKS5ServerFactory, SOCKS5ServerProtocol

#: Where the test client connects from.
CLIENT_ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
#: Where the proxy listens.
LISTEN_ADDRESS = IPv4Address("TCP", "127.0.0.1", 1080)
#: The local address of the proxy's outbound connection: BND.ADDR/BND.PORT.
OUTBOUND_LOCAL = IPv4Address("TCP", "10.0.0.5", 51000)
#: The destination the outbound connection reaches.
DESTINATION = IPv4Address("TCP", "192.0.2.1", 80)

#: The success reply that carries L{OUTBOUND_LOCAL}: 10.0.0.5 port 51000.
SUCCESS_REPLY = b"\x05\x00\x00\x01\x0a\x00\x00\x05\xc7\x38"


def greeting(*methods: int) -> bytes:
    """
    Return a client greeting (VER NMETHODS METHODS) offering C{methods}.
    """
    return bytes([0x05, len(methods), *methods])


def authRequest(username: bytes, password: bytes, version: int = 0x01) -> bytes:
    """
    Return an RFC 1929 username/password request.
    """
    return (
        bytes([version, len(username)])
        + username
        + bytes([len(password)])
        + password
    )


def request(host: str, port: int, command: int = 0x01) -> bytes:
    """
    Return a SOCKS5 request for C{host}: ATYP 1 for IPv4, 4 for IPv6 and 3 for
    a name, encoded here independently of L{socksrelay.wire}.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("ascii")
        body = bytes([0x03, len(name)]) + name
    else:
        body = bytes([0x01 if address.version == 4 else 0x04]) + address.packed
    return bytes([0x05, command, 0x00]) + body + struct.pack("!H", port)


def errorReply(code: int) -> bytes:
    """
    Return a failure reply with reply code C{code} and an all-zero IPv4
    BND.ADDR and BND.PORT.
    """
    return bytes([0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0])


class RecordingTransport(StringTransport):
    """
    A L{StringTransport} that counts the ways it was asked to close and
    offers C{loseWriteConnection} (half-close) like a TCP transport.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loseConnectionCalls = 0
        self.abortConnectionCalls = 0
        self.loseWriteConnectionCalls = 0

    def loseConnection(self) -> None:
        self.loseConnectionCalls += 1
        super().loseConnection()

    def abortConnection(self) -> None:
        self.abortConnectionCalls += 1
        super().abortConnection()

    def loseWriteConnection(self) -> None:
        self.loseWriteConnectionCalls += 1


@implementer(IStreamClientEndpoint)
class FakeConnectEndpoint:
    """
    An outbound endpoint whose connection attempt the test completes or fails.

    @ivar host: the destination host this endpoint was made for.
    @ivar port: the destination port.
    @ivar factory: the factory passed to L{connect}, once called.
    @ivar deferred: the L{Deferred} returned by L{connect}.
    @ivar cancelled: whether that L{Deferred}'s canceller was called.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.factory: Any = None
        self.deferred: Any = None
        self.cancelled = False

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        self.factory = protocolFactory
        self.deferred = Deferred(self._cancel)
        return self.deferred

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled = True

    def succeed(
        self,
        hostAddress: Any = OUTBOUND_LOCAL,
        peerAddress: Any = DESTINATION,
    ) -> tuple[Any, RecordingTransport]:
        """
        Connect a protocol from the factory to a L{RecordingTransport} and
        fire the connect L{Deferred} with it.

        @return: the outbound protocol and its transport.
        """
        protocol = self.factory.buildProtocol(peerAddress)
        transport = RecordingTransport(hostAddress=hostAddress, peerAddress=peerAddress)
        protocol.makeConnection(transport)
        self.deferred.callback(protocol)
        return protocol, transport

    def succeedInMemory(
        self,
        destination: Protocol,
        hostAddress: Any = OUTBOUND_LOCAL,
        peerAddress: Any = DESTINATION,
        clock: Any = None,
    ) -> iosim.IOPump:
        """
        Connect a protocol from the factory to C{destination} in memory and
        fire the connect L{Deferred} with it.

        @return: the pump that moves bytes between them.
        """
        protocol = self.factory.buildProtocol(peerAddress)
        pump = connectInMemory(
            protocol, hostAddress, destination, peerAddress, clock=clock
        )
        self.deferred.callback(protocol)
        return pump

    def fail(self, exception: BaseException) -> None:
        """
        Fail the connect L{Deferred} with C{exception}.
        """
        self.deferred.errback(Failure(exception))


class EndpointRecorder:
    """
    A C{connectEndpoint} callable for L{SOCKS5ServerFactory} that records
    every C{(host, port)} asked for and returns a L{FakeConnectEndpoint}.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.endpoints: list[FakeConnectEndpoint] = []

    def __call__(self, host: str, port: int) -> FakeConnectEndpoint:
        self.requests.append((host, port))
        endpoint = FakeConnectEndpoint(host, port)
        self.endpoints.append(endpoint)
        return endpoint

    @property
    def last(self) -> FakeConnectEndpoint:
        """
        The most recently made endpoint.
        """
        return self.endpoints[-1]


class ProxyHarness:
    """
    A L{SOCKS5ServerProtocol} connected to a L{RecordingTransport}, built by
    a factory on a L{MemoryReactorClock} with an L{EndpointRecorder}.

    @ivar reactor: the L{MemoryReactorClock}.
    @ivar recorder: the L{EndpointRecorder} (C{None} if the factory's own
        endpoints are used).
    @ivar factory: the L{SOCKS5ServerFactory}.
    @ivar protocol: the L{SOCKS5ServerProtocol}.
    @ivar transport: the client's L{RecordingTransport}.
    """

    def __init__(
        self,
        portal: Any = None,
        recordEndpoints: bool = True,
        transportFactory: Callable[..., StringTransport] = RecordingTransport,
        **factoryArguments: Any,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.recorder = EndpointRecorder() if recordEndpoints else None
        self.factory = SOCKS5ServerFactory(
            portal=portal,
            reactor=self.reactor,
            connectEndpoint=self.recorder,
            **factoryArguments,
        )
        self.protocol: SOCKS5ServerProtocol = self.factory.buildProtocol(
            CLIENT_ADDRESS
        )
        self.transport = transportFactory(
            hostAddress=LISTEN_ADDRESS, peerAddress=CLIENT_ADDRESS
        )
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """
        Deliver C{data} from the client.
        """
        self.protocol.dataReceived(data)

    def sendBytewise(self, data: bytes) -> None:
        """
        Deliver C{data} from the client one byte at a time.
        """
        for i in range(len(data)):
            self.protocol.dataReceived(data[i : i + 1])

    def received(self) -> bytes:
        """
        Return, and forget, what the proxy wrote to the client.
        """
        data = self.transport.value()
        self.transport.clear()
        return data

    def clientLost(self, reason: BaseException | None = None) -> None:
        """
        Tell the proxy that the client connection is gone.
        """
        self.transport.connected = False
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))

    def connected(
        self, host: str = "192.0.2.1", port: int = 80, early: bytes = b""
    ) -> tuple[Any, RecordingTransport]:
        """
        Do a no-authentication handshake and a CONNECT that succeeds.

        @return: the outbound protocol and its transport.
        """
        self.send(greeting(0x00) + request(host, port) + early)
        outbound, outboundTransport = self.recorder.last.succeed()
        self.received()
        return outbound, outboundTransport


@implementer(ICredentialsChecker)
class PendingChecker:
    """
    A username/password checker whose answers wait until the test fires
    them.

    @ivar pending: the L{Deferred}s returned, in order.
    @ivar credentials: the credentials asked about, in order.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []
        self.credentials: list[Any] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        self.credentials.append(credentials)
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


class CheckerBroken(Exception):
    """
    What L{BrokenChecker} fails with: not an L{UnauthorizedLogin}.
    """


@implementer(ICredentialsChecker)
class BrokenChecker:
    """
    A username/password checker that always fails with L{CheckerBroken}, as a
    checker with a lost database connection might.
    """

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        return fail(CheckerBroken("the user database is unavailable"))


class FakeResolver:
    """
    A L{twisted.internet.interfaces.IResolver} stand-in answering A and AAAA
    lookups from tables; an exception in a table is returned as a failure.

    @ivar lookups: C{(kind, name)} for every lookup, in order.
    """

    def __init__(
        self,
        a: dict[str, Any] | None = None,
        aaaa: dict[str, Any] | None = None,
    ) -> None:
        self._a = a or {}
        self._aaaa = aaaa or {}
        self.lookups: list[tuple[str, str]] = []

    def _answer(self, table: dict[str, Any], recordType: int, name: str) -> Any:
        answer = table.get(name, [])
        if isinstance(answer, BaseException):
            return fail(answer)
        recordClass = dns.Record_A if recordType == dns.A else dns.Record_AAAA
        records = [
            dns.RRHeader(name, type=recordType, payload=recordClass(address))
            for address in answer
        ]
        return succeed((records, [], []))

    def lookupAddress(self, name: str, timeout: Any = None) -> Any:
        self.lookups.append(("A", name))
        return self._answer(self._a, dns.A, name)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Any:
        self.lookups.append(("AAAA", name))
        return self._answer(self._aaaa, dns.AAAA, name)


@implementer(IListeningPort)
class FakeListeningPort:
    """
    A listening port that only knows its address.
    """

    def __init__(self, address: Any) -> None:
        self._address = address

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        pass

    def getHost(self) -> Any:
        return self._address


@implementer(IStreamServerEndpoint)
class FakeServerEndpoint:
    """
    A server endpoint that "listens" at once on a given address.

    @ivar factories: the factories passed to L{listen}.
    """

    def __init__(self, address: Any) -> None:
        self._address = address
        self.factories: list[Any] = []

    def listen(self, protocolFactory: Any) -> Deferred[Any]:
        self.factories.append(protocolFactory)
        return succeed(FakeListeningPort(self._address))


def connectInMemory(
    connecting: Any,
    connectingAddress: Any,
    accepting: Any,
    acceptingAddress: Any,
    clock: Any = None,
) -> iosim.IOPump:
    """
    Connect two protocols in memory (this module's only use of
    L{twisted.test.iosim}).

    @param connecting: the protocol on the initiating side.
    @param connectingAddress: its local address.
    @param accepting: the protocol on the accepting side.
    @param acceptingAddress: its local address.
    @param clock: a clock to advance by 0 with each pump, if any.
    @return: the pump; call C{flush()} to deliver what was written.
    """
    connectingTransport = iosim.FakeTransport(
        connecting,
        isServer=False,
        hostAddress=connectingAddress,
        peerAddress=acceptingAddress,
    )
    acceptingTransport = iosim.FakeTransport(
        accepting,
        isServer=True,
        hostAddress=acceptingAddress,
        peerAddress=connectingAddress,
    )
    return iosim.connect(
        accepting,
        acceptingTransport,
        connecting,
        connectingTransport,
        clock=clock,
    )


class Collector(Protocol):
    """
    A protocol that keeps what it receives and whether it was disconnected.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lostReason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostReason = reason


class UpperEcho(Collector):
    """
    A destination that answers every chunk with the same bytes in upper case.
    """

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.transport.write(data.upper())  # type: ignore[union-attr]


__all__ = [
    "CLIENT_ADDRESS",
    "LISTEN_ADDRESS",
    "OUTBOUND_LOCAL",
    "DESTINATION",
    "SUCCESS_REPLY",
    "greeting",
    "authRequest",
    "request",
    "errorReply",
    "RecordingTransport",
    "FakeConnectEndpoint",
    "EndpointRecorder",
    "ProxyHarness",
    "PendingChecker",
    "CheckerBroken",
    "BrokenChecker",
    "FakeResolver",
    "FakeListeningPort",
    "FakeServerEndpoint",
    "connectInMemory",
    "Collector",
    "UpperEcho",
]


class ClientConnection:
    """
    One client connection to a factory's protocol, over a
    L{RecordingTransport}, from C{host}:C{port}.
    """

    def __init__(self, factory: Any, host: str = "127.0.0.1", port: int = 40000) -> None:
        address = IPv4Address("TCP", host, port)
        self.protocol = factory.buildProtocol(address)
        self.transport = RecordingTransport(hostAddress=LISTEN_ADDRESS, peerAddress=address)
        self.protocol.makeConnection(self.transport)

    @property
    def session(self) -> Any:
        return self.protocol.session

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def lost(self) -> None:
        self.transport.connected = False
        self.protocol.connectionLost(Failure(ConnectionDone()))
