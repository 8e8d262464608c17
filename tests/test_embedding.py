# -*- test-case-name: tests.test_embedding -*-
"""
socksrelay as a library: the factory is built in code, with its portal,
reactor and timeouts, and added to an existing Twisted service tree, exactly
as README.rst shows; then a client goes through it on the real reactor over
loopback.
"""

from __future__ import annotations

import struct

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from socksrelay.auth import SOCKSRealm
from socksrelay.server import SOCKS5ServerFactory


class Echo(Protocol):
    """
    Echoes; fires C{self.factory.lost} when its connection is gone.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def connectionLost(self, reason: object) -> None:
        self.factory.lost.callback(None)


class ScriptedClient(Protocol):
    """
    Sends C{script} at once (the whole handshake pipelined with a payload)
    and collects everything until it has C{expect} bytes.
    """

    def __init__(self, script: bytes, expect: int) -> None:
        self.script = script
        self.expect = expect
        self.received = b""
        self.done: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.script)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expect and not self.done.called:
            self.transport.loseConnection()
            self.done.callback(self.received)

    def connectionLost(self, reason: object) -> None:
        if not self.done.called:
            self.done.callback(self.received)
        self.lost.callback(None)


@implementer(IStreamServerEndpoint)
class PortRecorder:
    """
    Wraps a server endpoint and fires C{listening} with the port it got.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self.endpoint = endpoint
        self.listening: Deferred[object] = Deferred()

    def listen(self, factory: object) -> Deferred[object]:
        d = self.endpoint.listen(factory)

        def got(port: object) -> object:
            self.listening.callback(port)
            return port

        return d.addCallback(got)


class EmbeddingTests(TestCase):
    """
    The proxy runs inside another application's service tree.
    """

    @inlineCallbacks
    def test_factoryInExistingServiceTree(self):  # type: ignore[no-untyped-def]
        """
        A SOCKS5ServerFactory with a portal, added under a MultiService with
        StreamServerEndpointService, authenticates a client and relays its
        bytes to an echo server and back; stopping the parent stops it.
        """
        echoFactory = Factory.forProtocol(Echo)
        echoFactory.lost = Deferred()
        echoPort = yield serverFromString(
            reactor, "tcp:0:interface=127.0.0.1"
        ).listen(echoFactory)
        self.addCleanup(echoPort.stopListening)

        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"s3cret")
        factory = SOCKS5ServerFactory(
            portal=Portal(SOCKSRealm(), [checker]),
            reactor=reactor,
            handshakeTimeout=10,
            connectTimeout=10,
        )
        parent = MultiService()
        endpoint = PortRecorder(
            serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        )
        socksService = StreamServerEndpointService(endpoint, factory)
        socksService.setServiceParent(parent)
        parent.startService()
        port = yield endpoint.listening
        self.addCleanup(parent.stopService)

        payload = b"hello through an embedded proxy"
        script = (
            b"\x05\x01\x02"
            + b"\x01\x05alice\x06s3cret"
            + b"\x05\x01\x00\x01\x7f\x00\x00\x01"
            + struct.pack("!H", echoPort.getHost().port)
            + payload
        )
        expect = 2 + 2 + 10 + len(payload)
        client = ScriptedClient(script, expect)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(lambda: client)
        )
        received = yield client.done
        self.assertEqual(received[:4], b"\x05\x02\x01\x00")
        self.assertEqual(received[4:8], b"\x05\x00\x00\x01")
        self.assertEqual(received[14:], payload)
        # The client left: the proxy closes the outbound side too.
        yield client.lost
        yield echoFactory.lost

        yield parent.stopService()
        self.assertFalse(socksService.running)
