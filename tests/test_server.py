# -*- test-case-name: tests.test_server -*-
"""
Tests for L{socksrelay.server}, L{socksrelay.relay} and L{socksrelay.session}:
the SOCKS5 server protocol driven through L{StringTransport}s, a
L{MemoryReactorClock} and in-memory outbound endpoints, without a network.
"""

from __future__ import annotations

import errno
import os

from zope.interface import implementer

from twisted.cred.checkers import (
    AllowAnonymousAccess,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import error
from twisted.internet.address import IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.auth import SOCKSRealm, SOCKSUser
from socksrelay.interfaces import ISOCKSUser
from socksrelay.server import (
    EARLY_DATA_PAUSE,
    SOCKS5ServerProtocol,
    replyForFailure,
)
from socksrelay.wire import Reply
from tests.fakes import (
    CLIENT_ADDRESS,
    LISTEN_ADDRESS,
    SUCCESS_REPLY,
    BrokenChecker,
    CheckerBroken,
    Collector,
    PendingChecker,
    ProxyHarness,
    RecordingTransport,
    UpperEcho,
    authRequest,
    connectInMemory,
    errorReply,
    greeting,
    request,
)

NO_AUTH = 0x00
USER_PASS = 0x02


def passwordPortal(**users: bytes) -> Portal:
    """
    Return a portal that accepts the given users and passwords only.
    """
    users = users or {"alice": b"pw"}
    return Portal(SOCKSRealm(), [InMemoryUsernamePasswordDatabaseDontUse(**users)])


def sessionEvents(observer: EventLoggingObserver) -> list[dict]:
    """
    Return the end-of-session events among those C{observer} saw.
    """
    return [
        e
        for e in observer
        if str(e.get("log_format", "")).startswith("session ended")
    ]


class NoAuthenticationGreetingTests(SynchronousTestCase):
    """
    Method negotiation when the server has no portal.
    """

    def test_noAuthenticationAccepted(self) -> None:
        """
        A greeting offering method 0x00 gets C{05 00} and the connection stays
        open.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH))
        self.assertEqual(h.received(), b"\x05\x00")
        self.assertFalse(h.transport.disconnecting)

    def test_noAcceptableMethod(self) -> None:
        """
        A greeting offering only method 0x02 gets C{05 FF} and the connection
        is closed.
        """
        h = ProxyHarness()
        h.send(greeting(USER_PASS))
        self.assertEqual(h.received(), b"\x05\xff")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.transport.loseConnectionCalls, 1)

    def test_emptyMethodList(self) -> None:
        """
        A greeting that offers no method at all gets C{05 FF} and is closed.
        """
        h = ProxyHarness()
        h.send(b"\x05\x00")
        self.assertEqual(h.received(), b"\x05\xff")
        self.assertTrue(h.transport.disconnecting)

    def test_unknownProtocol(self) -> None:
        """
        A connection whose first byte is neither 0x05, 0x04 nor an HTTP
        method (here a TLS ClientHello) is closed without any reply.
        """
        h = ProxyHarness()
        h.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertEqual(h.received(), b"")
        self.assertTrue(h.transport.disconnecting)

    def test_disabledProtocolRefused(self) -> None:
        """
        With only SOCKS5 enabled, a SOCKS4 client is disconnected without a
        reply, like an unknown protocol.
        """
        h = ProxyHarness(protocols=["socks5"])
        h.send(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00")
        self.assertEqual(h.received(), b"")
        self.assertTrue(h.transport.disconnecting)

    def test_nothingAfterRefusal(self) -> None:
        """
        Bytes sent after a refused greeting are ignored: no further reply and
        no outbound connection.
        """
        h = ProxyHarness()
        h.send(greeting(USER_PASS) + request("192.0.2.1", 80))
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80))
        self.assertEqual(h.received(), b"\x05\xff")
        self.assertEqual(h.recorder.requests, [])


@implementer(IRealm)
class LogoutRecordingRealm(SOCKSRealm):
    """
    A L{SOCKSRealm} whose logout callables count their calls.
    """

    def __init__(self) -> None:
        self.logouts = 0

    def requestAvatar(self, avatarId, mind, *interfaces):
        interface, avatar, _ = SOCKSRealm.requestAvatar(
            self, avatarId, mind, *interfaces
        )

        def logout() -> None:
            self.logouts += 1

        return interface, avatar, logout


class UsernamePasswordTests(SynchronousTestCase):
    """
    Method negotiation and RFC 1929 sub-negotiation with a cred portal.
    """

    def test_serverPrefersUsernamePassword(self) -> None:
        """
        With a username/password portal, a client offering 0x00 and 0x02 is
        told to use 0x02.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(greeting(NO_AUTH, USER_PASS))
        self.assertEqual(h.received(), b"\x05\x02")
        self.assertFalse(h.transport.disconnecting)

    def test_noAuthenticationRefused(self) -> None:
        """
        With a username/password portal, a client offering only 0x00 gets
        C{05 FF} and is closed.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(greeting(NO_AUTH))
        self.assertEqual(h.received(), b"\x05\xff")
        self.assertTrue(h.transport.disconnecting)

    def test_goodCredentialsThenConnect(self) -> None:
        """
        Good credentials get C{01 00}, after which a CONNECT is carried out.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(greeting(USER_PASS))
        h.send(authRequest(b"alice", b"pw"))
        self.assertEqual(h.received(), b"\x05\x02\x01\x00")
        h.send(request("192.0.2.1", 80))
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 80)])
        h.recorder.last.succeed()
        self.assertEqual(h.received(), SUCCESS_REPLY)
        self.assertFalse(h.transport.disconnecting)

    def test_avatarKept(self) -> None:
        """
        After a successful login the protocol holds the realm's avatar for
        the user.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        self.assertTrue(ISOCKSUser.providedBy(h.protocol.avatar))
        self.assertEqual(h.protocol.avatar.username, "alice")

    def test_wrongPassword(self) -> None:
        """
        A wrong password gets C{01 01}, the connection is closed and a
        pipelined request is not carried out.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(
            greeting(USER_PASS)
            + authRequest(b"alice", b"wrong")
            + request("192.0.2.1", 80)
        )
        self.assertEqual(h.received(), b"\x05\x02\x01\x01")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])

    def test_unknownUser(self) -> None:
        """
        An unknown user name gets C{01 01} and the connection is closed.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(greeting(USER_PASS) + authRequest(b"mallory", b"pw"))
        self.assertEqual(h.received(), b"\x05\x02\x01\x01")
        self.assertTrue(h.transport.disconnecting)

    def test_emptyUserName(self) -> None:
        """
        A zero-length user name gets C{01 01} and the connection is closed,
        without the checker being asked.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(greeting(USER_PASS) + authRequest(b"", b"pw"))
        self.assertEqual(h.received(), b"\x05\x02\x01\x01")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(checker.credentials, [])

    def test_emptyUserNameWithInMemoryChecker(self) -> None:
        """
        A zero-length user name is refused with C{01 01} by a server using
        an in-memory checker, too.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(greeting(USER_PASS) + authRequest(b"", b""))
        self.assertEqual(h.received(), b"\x05\x02\x01\x01")
        self.assertTrue(h.transport.disconnecting)

    def test_wrongSubnegotiationVersion(self) -> None:
        """
        A username/password request with version 0x05 instead of 0x01 gets
        C{01 01} and the connection is closed.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw", version=0x05))
        self.assertEqual(h.received(), b"\x05\x02\x01\x01")
        self.assertTrue(h.transport.disconnecting)

    def test_pendingCheckerHoldsStatus(self) -> None:
        """
        While the checker has not answered no status is sent, and the client
        is still read so that its leaving would be noticed; once the checker
        answers, the status is sent.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        self.assertEqual(h.received(), b"\x05\x02")
        self.assertEqual(h.transport.producerState, "producing")
        self.assertEqual(len(checker.pending), 1)
        self.assertEqual(checker.credentials[0].username, b"alice")
        checker.pending[0].callback(b"alice")
        self.assertEqual(h.received(), b"\x01\x00")
        self.assertEqual(h.transport.producerState, "producing")

    def test_pendingCheckerPausesAtLimit(self) -> None:
        """
        While the checker has not answered, the client transport is paused
        once L{EARLY_DATA_PAUSE} bytes are buffered, and resumed when the
        checker answers; the pipelined request is then carried out and the
        buffered bytes are relayed.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        early = request("192.0.2.1", 80) + b"x" * (EARLY_DATA_PAUSE - 10)
        h.send(early[:-1])
        self.assertEqual(h.transport.producerState, "producing")
        h.send(early[-1:])
        self.assertEqual(h.transport.producerState, "paused")
        checker.pending[0].callback(b"alice")
        self.assertEqual(h.transport.producerState, "producing")
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 80)])
        _, outboundTransport = h.recorder.last.succeed()
        self.assertEqual(outboundTransport.value(), b"x" * (EARLY_DATA_PAUSE - 10))

    def test_requestPipelinedBehindPendingCheck(self) -> None:
        """
        A request sent in the same write as the credentials is handled only
        after the checker answers.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(
            greeting(USER_PASS) + authRequest(b"alice", b"pw") + request("::1", 443)
        )
        self.assertEqual(h.recorder.requests, [])
        checker.pending[0].callback(b"alice")
        self.assertEqual(h.received(), b"\x05\x02\x01\x00")
        self.assertEqual(h.recorder.requests, [("::1", 443)])

    def test_eofWhileCheckerPending(self) -> None:
        """
        A client that shuts down its write side before the checker answers,
        having sent no request, is closed once the checker answers.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        h.protocol.readConnectionLost()
        self.assertFalse(h.transport.disconnecting)
        checker.pending[0].callback(b"alice")
        self.assertEqual(h.received(), b"\x05\x02\x01\x00")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])

    def test_pendingCheckRejects(self) -> None:
        """
        A checker that later fails with L{UnauthorizedLogin} leads to
        C{01 01} and a close, and a pipelined request is dropped.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(
            greeting(USER_PASS) + authRequest(b"alice", b"pw") + request("::1", 443)
        )
        checker.pending[0].errback(UnauthorizedLogin())
        self.assertEqual(h.received(), b"\x05\x02\x01\x01")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])

    def test_brokenCheckerLogged(self) -> None:
        """
        A checker failing with something other than L{UnauthorizedLogin}
        gets the client C{01 01} and a close, and the failure is logged.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [BrokenChecker()]))
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        self.assertEqual(h.received(), b"\x05\x02\x01\x01")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(CheckerBroken)), 1)
        failures = [e for e in observer if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertIn("alice", formatEvent(failures[0]))

    def test_anonymousChecker(self) -> None:
        """
        A portal with an anonymous checker accepts method 0x00, and a CONNECT
        then works.
        """
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [AllowAnonymousAccess()]))
        h.send(greeting(NO_AUTH))
        self.assertEqual(h.received(), b"\x05\x00")
        self.assertIsNone(h.protocol.avatar.username)
        h.send(request("192.0.2.1", 80))
        h.recorder.last.succeed()
        self.assertEqual(h.received(), SUCCESS_REPLY)

    def test_anonymousCheckerRefusesUsernamePassword(self) -> None:
        """
        A portal with only an anonymous checker refuses a client that offers
        only method 0x02.
        """
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [AllowAnonymousAccess()]))
        h.send(greeting(USER_PASS))
        self.assertEqual(h.received(), b"\x05\xff")
        self.assertTrue(h.transport.disconnecting)

    def test_anonymousAndPassword(self) -> None:
        """
        With both kinds of checker, 0x02 is preferred but a client offering
        only 0x00 is let in.
        """
        portal = Portal(
            SOCKSRealm(),
            [AllowAnonymousAccess(), InMemoryUsernamePasswordDatabaseDontUse(a=b"b")],
        )
        both = ProxyHarness(portal=portal)
        both.send(greeting(NO_AUTH, USER_PASS))
        self.assertEqual(both.received(), b"\x05\x02")
        anonymous = ProxyHarness(portal=portal)
        anonymous.send(greeting(NO_AUTH))
        self.assertEqual(anonymous.received(), b"\x05\x00")
        self.assertFalse(anonymous.transport.disconnecting)

    def test_logoutWhenClientLeaves(self) -> None:
        """
        The realm's logout is called once when the client connection is
        lost.
        """
        realm = LogoutRecordingRealm()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")
        h = ProxyHarness(portal=Portal(realm, [checker]))
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        self.assertEqual(realm.logouts, 0)
        h.clientLost()
        self.assertEqual(realm.logouts, 1)


class ConnectTests(SynchronousTestCase):
    """
    A successful CONNECT.
    """

    def test_ipv4Destination(self) -> None:
        """
        The endpoint is asked for the IPv4 address and port as requested.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 8080))
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 8080)])

    def test_ipv6Destination(self) -> None:
        """
        The endpoint is asked for the IPv6 address, in text form, and port.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("::1", 443))
        self.assertEqual(h.recorder.requests, [("::1", 443)])

    def test_domainDestination(self) -> None:
        """
        The endpoint is asked for the domain name, unresolved, and port.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("example.com", 80))
        self.assertEqual(h.recorder.requests, [("example.com", 80)])

    def test_noReplyBeforeConnected(self) -> None:
        """
        No reply is sent until the outbound connection exists; then the
        success reply is.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH))
        h.received()
        h.send(request("192.0.2.1", 80))
        self.assertEqual(h.received(), b"")
        self.assertNoResult(h.recorder.last.deferred)
        h.recorder.last.succeed()
        self.assertEqual(h.received(), SUCCESS_REPLY)

    def test_replyCarriesOutboundLocalAddress(self) -> None:
        """
        BND.ADDR and BND.PORT of the reply are the outbound connection's
        local IPv4 address and port.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("example.com", 80))
        h.received()
        h.recorder.last.succeed()
        self.assertEqual(
            h.received(), b"\x05\x00\x00\x01\x0a\x00\x00\x05\xc7\x38"
        )

    def test_replyCarriesOutboundLocalIPv6Address(self) -> None:
        """
        An outbound connection with a local IPv6 address gets an ATYP 4
        reply carrying that address.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("::1", 80))
        h.received()
        h.recorder.last.succeed(hostAddress=IPv6Address("TCP", "2001:db8::5", 51000))
        self.assertEqual(
            h.received(),
            b"\x05\x00\x00\x04"
            + b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x05"
            + b"\xc7\x38",
        )

    def test_clientPausedAtLimitWhileConnecting(self) -> None:
        """
        While the outbound connection is being made the client is read until
        L{EARLY_DATA_PAUSE} bytes are buffered, then paused, and resumed once
        the connection exists.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH))
        h.send(request("192.0.2.1", 80))
        self.assertEqual(h.transport.producerState, "producing")
        h.send(b"x" * (EARLY_DATA_PAUSE - 1))
        self.assertEqual(h.transport.producerState, "producing")
        h.send(b"y")
        self.assertEqual(h.transport.producerState, "paused")
        _, outboundTransport = h.recorder.last.succeed()
        self.assertEqual(h.transport.producerState, "producing")
        self.assertEqual(
            outboundTransport.value(), b"x" * (EARLY_DATA_PAUSE - 1) + b"y"
        )

    def test_eofWhileConnecting(self) -> None:
        """
        A client that sends its request and data and then shuts down its
        write side gets its data relayed and its EOF passed on once the
        outbound connection exists.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80) + b"QUIT\r\n")
        h.protocol.readConnectionLost()
        self.assertFalse(h.transport.disconnecting)
        _, outboundTransport = h.recorder.last.succeed()
        self.assertEqual(h.received(), b"\x05\x00" + SUCCESS_REPLY)
        self.assertEqual(outboundTransport.value(), b"QUIT\r\n")
        self.assertEqual(outboundTransport.loseWriteConnectionCalls, 1)
        self.assertFalse(h.transport.disconnecting)

    def test_pipelinedDataReachesOutbound(self) -> None:
        """
        Bytes sent in the same write as the request are written to the
        outbound connection once it exists, and not before.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80) + b"GET / HTTP/1.0\r\n")
        endpoint = h.recorder.last
        self.assertEqual(h.received(), b"\x05\x00")
        _, outboundTransport = endpoint.succeed()
        self.assertEqual(outboundTransport.value(), b"GET / HTTP/1.0\r\n")
        self.assertEqual(h.received(), SUCCESS_REPLY)

    def test_dataWhileConnectingReachesOutbound(self) -> None:
        """
        Bytes that arrive in later reads while the connection is being made
        are kept and written to the outbound connection once it exists.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80) + b"one,")
        h.send(b"two")
        _, outboundTransport = h.recorder.last.succeed()
        self.assertEqual(outboundTransport.value(), b"one,two")

    def test_wholeHandshakeOneByteAtATime(self) -> None:
        """
        Greeting, credentials and request fed one byte at a time give the
        same replies and connection as fed whole.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.sendBytewise(
            greeting(USER_PASS)
            + authRequest(b"alice", b"pw")
            + request("example.com", 443)
        )
        self.assertEqual(h.received(), b"\x05\x02\x01\x00")
        self.assertEqual(h.recorder.requests, [("example.com", 443)])
        h.recorder.last.succeed()
        self.assertEqual(h.received(), SUCCESS_REPLY)

    def test_noAuthHandshakeOneByteAtATime(self) -> None:
        """
        A no-authentication handshake fed one byte at a time works.
        """
        h = ProxyHarness()
        h.sendBytewise(greeting(NO_AUTH) + request("::1", 22))
        self.assertEqual(h.received(), b"\x05\x00")
        self.assertEqual(h.recorder.requests, [("::1", 22)])

    def test_wholeHandshakeInOneWrite(self) -> None:
        """
        Greeting, credentials, request and payload in a single write are all
        handled, and the payload is relayed.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(
            greeting(USER_PASS)
            + authRequest(b"alice", b"pw")
            + request("example.com", 443)
            + b"payload"
        )
        self.assertEqual(h.received(), b"\x05\x02\x01\x00")
        self.assertEqual(h.recorder.requests, [("example.com", 443)])
        _, outboundTransport = h.recorder.last.succeed()
        self.assertEqual(h.received(), SUCCESS_REPLY)
        self.assertEqual(outboundTransport.value(), b"payload")

    def test_outboundFactoryIsQuiet(self) -> None:
        """
        The factory handed to the endpoint is not noisy, so each proxied
        connection does not log "Starting factory".
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80))
        self.assertFalse(h.recorder.last.factory.noisy)

    def test_connectTimerCancelledOnSuccess(self) -> None:
        """
        Once connected, no timer is left that could close the relay.
        """
        h = ProxyHarness(connectTimeout=10, handshakeTimeout=5)
        h.connected()
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        h.reactor.advance(60)
        self.assertFalse(h.transport.disconnecting)


class ConnectFailureTests(SynchronousTestCase):
    """
    A CONNECT whose outbound connection fails.
    """

    def failWith(self, exception: BaseException) -> ProxyHarness:
        """
        Do a handshake and fail the outbound connection with C{exception}.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("example.com", 80))
        h.received()
        h.recorder.last.fail(exception)
        return h

    def assertReplyAndClosed(self, exception: BaseException, code: int) -> None:
        """
        Failing with C{exception} sends reply C{code} and closes the client.
        """
        h = self.failWith(exception)
        self.assertEqual(h.received(), errorReply(code))
        self.assertTrue(h.transport.disconnecting)

    def test_connectionRefused(self) -> None:
        """
        A refused connection gets reply 0x05 and a close.
        """
        self.assertReplyAndClosed(error.ConnectionRefusedError(), 0x05)

    def test_dnsLookupError(self) -> None:
        """
        A name that does not resolve gets reply 0x04 and a close.
        """
        self.assertReplyAndClosed(error.DNSLookupError("example.com"), 0x04)

    def test_noRoute(self) -> None:
        """
        No route to the network gets reply 0x03 and a close.
        """
        self.assertReplyAndClosed(error.NoRouteError(), 0x03)

    def test_hostUnreachable(self) -> None:
        """
        A connect error with C{EHOSTUNREACH} gets reply 0x04 and a close.
        """
        self.assertReplyAndClosed(error.ConnectError(osError=errno.EHOSTUNREACH), 0x04)

    def test_timeoutError(self) -> None:
        """
        A L{error.TimeoutError} gets reply 0x06 and a close.
        """
        self.assertReplyAndClosed(error.TimeoutError(), 0x06)

    def test_tcpTimedOut(self) -> None:
        """
        A L{error.TCPTimedOutError} gets reply 0x06 and a close.
        """
        self.assertReplyAndClosed(error.TCPTimedOutError(), 0x06)

    def test_otherError(self) -> None:
        """
        Any other exception gets reply 0x01 and a close.
        """
        self.assertReplyAndClosed(Exception("something odd"), 0x01)

    def test_endpointFactoryRaises(self) -> None:
        """
        A C{connectEndpoint} callable that raises gets the client reply 0x01
        and a close instead of an exception escaping C{dataReceived}.
        """
        h = ProxyHarness()

        def broken(host: str, port: int):
            raise ValueError("no endpoint for you")

        h.factory.connectEndpoint = broken
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80))
        self.assertEqual(h.received(), b"\x05\x00" + errorReply(0x01))
        self.assertTrue(h.transport.disconnecting)

    def test_connectTimeout(self) -> None:
        """
        An outbound connection still pending after C{connectTimeout} seconds
        is cancelled and the client gets reply 0x06 and a close.
        """
        h = ProxyHarness(connectTimeout=10)
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80))
        h.received()
        endpoint = h.recorder.last
        h.reactor.advance(9.9)
        self.assertFalse(endpoint.cancelled)
        self.assertEqual(h.received(), b"")
        self.assertFalse(h.transport.disconnecting)
        h.reactor.advance(0.2)
        self.assertTrue(endpoint.cancelled)
        self.assertEqual(h.received(), errorReply(0x06))
        self.assertTrue(h.transport.disconnecting)

    def test_connectCancelledWhenClientLeaves(self) -> None:
        """
        If the client goes away while the outbound connection is pending, the
        connection attempt is cancelled and no timer is left.
        """
        h = ProxyHarness(connectTimeout=10)
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80))
        endpoint = h.recorder.last
        h.clientLost()
        self.assertTrue(endpoint.cancelled)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_noReplyToClientThatLeft(self) -> None:
        """
        A client that went away while its connection was pending is sent
        nothing afterwards, and its session is logged as ended by the
        client, without a reply code.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80))
        h.received()
        h.clientLost()
        self.assertEqual(h.received(), b"")
        [event] = sessionEvents(observer)
        self.assertIsNone(event["reply"])
        self.assertEqual(event["reason"], "client closed")


class ReplyForFailureTests(SynchronousTestCase):
    """
    L{replyForFailure} maps connection errors to RFC 1928 reply codes.
    """

    def assertMaps(self, exception: BaseException, reply: Reply) -> None:
        """
        C{exception} maps to C{reply}, with some text for the log.
        """
        code, text = replyForFailure(Failure(exception))
        self.assertEqual(code, reply)
        self.assertIsInstance(text, str)
        self.assertTrue(text)

    def test_refused(self) -> None:
        """
        L{error.ConnectionRefusedError} maps to 0x05.
        """
        self.assertMaps(error.ConnectionRefusedError(), Reply.CONNECTION_REFUSED)

    def test_refusedByErrno(self) -> None:
        """
        A connect error with C{ECONNREFUSED} maps to 0x05.
        """
        self.assertMaps(
            error.ConnectError(osError=errno.ECONNREFUSED), Reply.CONNECTION_REFUSED
        )

    def test_dnsLookup(self) -> None:
        """
        L{error.DNSLookupError} and L{error.UnknownHostError} map to 0x04.
        """
        self.assertMaps(error.DNSLookupError("x"), Reply.HOST_UNREACHABLE)
        self.assertMaps(error.UnknownHostError(), Reply.HOST_UNREACHABLE)

    def test_noRoute(self) -> None:
        """
        L{error.NoRouteError} and C{ENETUNREACH} map to 0x03.
        """
        self.assertMaps(error.NoRouteError(), Reply.NETWORK_UNREACHABLE)
        self.assertMaps(
            error.ConnectError(osError=errno.ENETUNREACH), Reply.NETWORK_UNREACHABLE
        )

    def test_hostUnreachable(self) -> None:
        """
        C{EHOSTUNREACH} and C{EHOSTDOWN} map to 0x04.
        """
        self.assertMaps(
            error.ConnectError(osError=errno.EHOSTUNREACH), Reply.HOST_UNREACHABLE
        )
        self.assertMaps(
            error.ConnectError(osError=errno.EHOSTDOWN), Reply.HOST_UNREACHABLE
        )

    def test_timeouts(self) -> None:
        """
        Time-outs, by exception type or C{ETIMEDOUT}, map to 0x06.
        """
        self.assertMaps(error.TimeoutError(), Reply.TTL_EXPIRED)
        self.assertMaps(error.TCPTimedOutError(), Reply.TTL_EXPIRED)
        self.assertMaps(error.ConnectError(osError=errno.ETIMEDOUT), Reply.TTL_EXPIRED)

    def test_addressFamily(self) -> None:
        """
        C{EAFNOSUPPORT} maps to 0x08.
        """
        self.assertMaps(
            error.ConnectError(osError=errno.EAFNOSUPPORT),
            Reply.ADDRESS_TYPE_NOT_SUPPORTED,
        )

    def test_outgoingAddressNotBindable(self) -> None:
        """
        An outgoing address (C{external}) that cannot be bound, for any
        reason (C{EADDRNOTAVAIL} included), is the proxy's failure, not the
        destination's address type: 0x01, with a text naming the outgoing
        address.
        """
        for code in (errno.EADDRNOTAVAIL, errno.EADDRINUSE, errno.EACCES):
            exception = error.ConnectBindError(code, os.strerror(code))
            reply, text = replyForFailure(Failure(exception))
            self.assertEqual(reply, Reply.GENERAL_FAILURE)
            self.assertIn("outgoing address", text)

    def test_anythingElse(self) -> None:
        """
        Any other exception maps to 0x01.
        """
        self.assertMaps(Exception("odd"), Reply.GENERAL_FAILURE)
        self.assertMaps(error.ConnectError(), Reply.GENERAL_FAILURE)


class UnsupportedRequestTests(SynchronousTestCase):
    """
    Requests the server does not carry out.
    """

    def assertRefused(self, data: bytes, code: int) -> None:
        """
        After a no-authentication greeting, C{data} gets reply C{code} and a
        close, and nothing is connected.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + data)
        self.assertEqual(h.received(), b"\x05\x00" + errorReply(code))
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])

    def test_bind(self) -> None:
        """
        BIND gets reply 0x07 from a factory made with C{bindOptions=False}.
        """
        h = ProxyHarness(bindOptions=False)
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80, command=0x02))
        self.assertEqual(h.received(), b"\x05\x00" + errorReply(0x07))
        self.assertTrue(h.transport.disconnecting)

    def test_udpAssociate(self) -> None:
        """
        UDP ASSOCIATE gets reply 0x07 from a factory made with
        C{udpOptions=False}.
        """
        h = ProxyHarness(udpOptions=False)
        h.send(greeting(NO_AUTH) + request("0.0.0.0", 0, command=0x03))
        self.assertEqual(h.received(), b"\x05\x00" + errorReply(0x07))
        self.assertTrue(h.transport.disconnecting)

    def test_unknownCommand(self) -> None:
        """
        An unknown command gets reply 0x07.
        """
        self.assertRefused(request("192.0.2.1", 80, command=0x09), 0x07)

    def test_unknownAddressType(self) -> None:
        """
        An unknown address type gets reply 0x08.
        """
        self.assertRefused(b"\x05\x01\x00\x02\xc0\x00\x02\x01\x00\x50", 0x08)

    def test_wrongRequestVersion(self) -> None:
        """
        A request whose version is not 5 gets reply 0x01.
        """
        self.assertRefused(b"\x04" + request("192.0.2.1", 80)[1:], 0x01)


class HandshakeTimeoutTests(SynchronousTestCase):
    """
    The client has C{handshakeTimeout} seconds to get its request in.
    """

    def test_partialGreetingTimesOut(self) -> None:
        """
        A client that sends only part of its greeting is closed after the
        handshake timeout, not before.
        """
        h = ProxyHarness(handshakeTimeout=5)
        h.send(b"\x05")
        h.reactor.advance(4.9)
        self.assertFalse(h.transport.disconnecting)
        h.reactor.advance(0.2)
        self.assertTrue(h.transport.disconnecting)

    def test_silentClientTimesOut(self) -> None:
        """
        A client that sends nothing is closed after the handshake timeout.
        """
        h = ProxyHarness(handshakeTimeout=5)
        h.reactor.advance(5)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.received(), b"")

    def test_trickleDoesNotExtend(self) -> None:
        """
        A byte every second does not reset the handshake timeout: the client
        is still closed five seconds after it connected.
        """
        h = ProxyHarness(handshakeTimeout=5)
        data = greeting(NO_AUTH) + request("example.com", 80)
        for i in range(4):
            h.send(data[i : i + 1])
            h.reactor.advance(1)
        self.assertFalse(h.transport.disconnecting)
        h.send(data[4:5])
        h.reactor.advance(1)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])

    def test_pendingCheckerTimesOut(self) -> None:
        """
        A checker that never answers does not hold the client past the
        handshake timeout, and a late answer is ignored.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]), handshakeTimeout=5)
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        h.received()
        h.reactor.advance(5)
        self.assertTrue(h.transport.disconnecting)
        checker.pending[0].callback(b"alice")
        self.assertEqual(h.received(), b"")

    def test_timeoutEndsWithRequest(self) -> None:
        """
        Once the request is in, the handshake timeout no longer applies:
        only the connect timeout does.
        """
        h = ProxyHarness(handshakeTimeout=5, connectTimeout=30)
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80))
        h.reactor.advance(10)
        self.assertFalse(h.transport.disconnecting)
        self.assertFalse(h.recorder.last.cancelled)

    def test_timerGoneAfterDisconnect(self) -> None:
        """
        A client that leaves during the handshake leaves no timer behind.
        """
        h = ProxyHarness(handshakeTimeout=5)
        h.send(b"\x05")
        h.clientLost()
        self.assertEqual(h.reactor.getDelayedCalls(), [])


class RelayTests(SynchronousTestCase):
    """
    Relaying after a successful CONNECT.
    """

    def test_dataBothWays(self) -> None:
        """
        Bytes from the client reach the destination and bytes from the
        destination reach the client.
        """
        h = ProxyHarness()
        outbound, outboundTransport = h.connected()
        h.send(b"ping")
        self.assertEqual(outboundTransport.value(), b"ping")
        outbound.dataReceived(b"pong")
        self.assertEqual(h.received(), b"pong")

    def test_producersRegisteredBothWays(self) -> None:
        """
        Each transport is registered as the streaming producer of the other.
        """
        h = ProxyHarness()
        _, outboundTransport = h.connected()
        self.assertIs(outboundTransport.producer, h.transport)
        self.assertTrue(outboundTransport.streaming)
        self.assertIs(h.transport.producer, outboundTransport)
        self.assertTrue(h.transport.streaming)

    def test_fullOutboundBufferPausesClient(self) -> None:
        """
        When the outbound side pauses its producer, reading from the client
        pauses, and resumes when it does.
        """
        h = ProxyHarness()
        _, outboundTransport = h.connected()
        outboundTransport.producer.pauseProducing()
        self.assertEqual(h.transport.producerState, "paused")
        outboundTransport.producer.resumeProducing()
        self.assertEqual(h.transport.producerState, "producing")

    def test_fullClientBufferPausesOutbound(self) -> None:
        """
        When the client side pauses its producer, reading from the
        destination pauses.
        """
        h = ProxyHarness()
        _, outboundTransport = h.connected()
        h.transport.producer.pauseProducing()
        self.assertEqual(outboundTransport.producerState, "paused")

    def test_relayInMemory(self) -> None:
        """
        With the destination connected in memory, the client's bytes reach it
        and its answer comes back to the client.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80) + b"early ")
        destination = UpperEcho()
        pump = h.recorder.last.succeedInMemory(destination)
        self.assertEqual(h.received(), b"\x05\x00" + SUCCESS_REPLY)
        h.send(b"hello")
        pump.flush()
        self.assertEqual(destination.received, b"early hello")
        self.assertEqual(h.received(), b"EARLY HELLO")

    def test_wholeProxyInMemory(self) -> None:
        """
        A client and a destination both connected in memory exchange bytes
        through the proxy, and the destination closing closes the client.
        """
        h = ProxyHarness()
        proxy = h.factory.buildProtocol(CLIENT_ADDRESS)
        client = Collector()
        clientPump = connectInMemory(client, CLIENT_ADDRESS, proxy, LISTEN_ADDRESS)
        client.transport.write(greeting(NO_AUTH) + request("example.com", 80))
        clientPump.flush()
        destination = UpperEcho()
        destinationPump = h.recorder.last.succeedInMemory(destination)
        clientPump.flush()
        self.assertEqual(client.received, b"\x05\x00" + SUCCESS_REPLY)
        client.received = b""
        client.transport.write(b"abc")
        clientPump.flush()
        destinationPump.flush()
        clientPump.flush()
        self.assertEqual(destination.received, b"abc")
        self.assertEqual(client.received, b"ABC")
        destination.transport.loseConnection()
        destinationPump.flush()
        clientPump.flush()
        self.assertIsNotNone(client.lostReason)


@implementer(ISSLTransport)
class _TLSRecordingTransport(RecordingTransport):
    """
    A L{RecordingTransport} that says it is TLS, as Twisted's TLS transports
    do (and, like them, still answers to C{loseWriteConnection}).
    """


class HalfCloseTests(SynchronousTestCase):
    """
    An EOF on one side becomes a write shutdown on the other.
    """

    def test_clientEOF(self) -> None:
        """
        EOF from the client shuts down writing to the destination, and bytes
        from the destination still reach the client.
        """
        h = ProxyHarness()
        outbound, outboundTransport = h.connected()
        h.protocol.readConnectionLost()
        self.assertEqual(outboundTransport.loseWriteConnectionCalls, 1)
        self.assertEqual(outboundTransport.loseConnectionCalls, 0)
        self.assertFalse(h.transport.disconnecting)
        outbound.dataReceived(b"still here")
        self.assertEqual(h.received(), b"still here")

    def test_destinationEOF(self) -> None:
        """
        EOF from the destination shuts down writing to the client, and bytes
        from the client still reach the destination.
        """
        h = ProxyHarness()
        outbound, outboundTransport = h.connected()
        outbound.readConnectionLost()
        self.assertEqual(h.transport.loseWriteConnectionCalls, 1)
        self.assertFalse(h.transport.disconnecting)
        self.assertFalse(outboundTransport.disconnecting)
        h.send(b"more")
        self.assertEqual(outboundTransport.value(), b"more")

    def test_destinationEOFToTLSClient(self) -> None:
        """
        EOF from the destination to a client on a TLS transport closes the
        TLS way (the transport's own C{loseConnection}: buffered bytes, then
        close_notify) instead of C{loseWriteConnection}, which would shut
        the raw socket under the TLS layer; the destination's producer is
        unregistered so that it cannot hold the close_notify back, and bytes
        from the client still reach the destination.
        """
        h = ProxyHarness(transportFactory=_TLSRecordingTransport)
        outbound, outboundTransport = h.connected()
        self.assertIsNotNone(h.transport.producer)
        outbound.readConnectionLost()
        self.assertEqual(h.transport.loseWriteConnectionCalls, 0)
        self.assertEqual(h.transport.loseConnectionCalls, 1)
        self.assertIsNone(h.transport.producer)
        self.assertFalse(outboundTransport.disconnecting)
        h.send(b"more")
        self.assertEqual(outboundTransport.value(), b"more")

    def test_tlsClientClosedGently(self) -> None:
        """
        When the destination is gone, a TLS client is closed with the TLS
        transport's own C{loseConnection} once its producer is unregistered
        (Twisted's TLS holds the close_notify back while one is registered).
        """
        h = ProxyHarness(transportFactory=_TLSRecordingTransport)
        outbound, _ = h.connected()
        outbound.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(h.transport.producer)
        self.assertEqual(h.transport.loseConnectionCalls, 1)

    def test_tlsClientStoppedAsProducer(self) -> None:
        """
        The destination's transport stops its producer as it is lost; for a
        TLS client that is a TLS close (C{loseConnection}), not the raw
        socket's C{stopProducing}, which would cut it without close_notify.
        """
        h = ProxyHarness(transportFactory=_TLSRecordingTransport)
        _, outboundTransport = h.connected()
        outboundTransport.producer.stopProducing()
        self.assertEqual(h.transport.loseConnectionCalls, 1)
        self.assertNotEqual(h.transport.producerState, "stopped")

    def test_bothEOF(self) -> None:
        """
        Once both directions are shut down, both connections are closed.
        """
        h = ProxyHarness()
        outbound, outboundTransport = h.connected()
        h.protocol.readConnectionLost()
        outbound.writeConnectionLost()
        outbound.readConnectionLost()
        h.protocol.writeConnectionLost()
        self.assertTrue(h.transport.disconnecting)
        self.assertTrue(outboundTransport.disconnecting)

    def test_eofDuringHandshake(self) -> None:
        """
        EOF from the client before the request closes the connection.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH))
        h.protocol.readConnectionLost()
        self.assertTrue(h.transport.disconnecting)


class TeardownTests(SynchronousTestCase):
    """
    A lost connection closes its peer, by force if it must.
    """

    def test_clientLostClosesOutbound(self) -> None:
        """
        When the client connection is lost, the outbound one is closed.
        """
        h = ProxyHarness()
        _, outboundTransport = h.connected()
        h.clientLost()
        self.assertEqual(outboundTransport.loseConnectionCalls, 1)
        self.assertEqual(outboundTransport.abortConnectionCalls, 0)

    def test_outboundLostClosesClient(self) -> None:
        """
        When the outbound connection is lost, the client one is closed.
        """
        h = ProxyHarness()
        outbound, _ = h.connected()
        outbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(h.transport.loseConnectionCalls, 1)
        self.assertEqual(h.transport.abortConnectionCalls, 0)

    def test_outboundAbortedAfterCloseTimeout(self) -> None:
        """
        An outbound connection that does not go away within C{closeTimeout}
        seconds of the client leaving is aborted.
        """
        h = ProxyHarness(closeTimeout=10)
        _, outboundTransport = h.connected()
        h.clientLost()
        h.reactor.advance(9.9)
        self.assertEqual(outboundTransport.abortConnectionCalls, 0)
        h.reactor.advance(0.2)
        self.assertEqual(outboundTransport.abortConnectionCalls, 1)

    def test_clientAbortedAfterCloseTimeout(self) -> None:
        """
        A client connection that does not go away within C{closeTimeout}
        seconds of the destination leaving is aborted.
        """
        h = ProxyHarness(closeTimeout=10)
        outbound, _ = h.connected()
        outbound.connectionLost(Failure(ConnectionLost()))
        h.reactor.advance(9.9)
        self.assertEqual(h.transport.abortConnectionCalls, 0)
        h.reactor.advance(0.2)
        self.assertEqual(h.transport.abortConnectionCalls, 1)

    def test_noAbortWhenPeerGoesInTime(self) -> None:
        """
        A peer that goes away within C{closeTimeout} is not aborted, and no
        timer is left.
        """
        h = ProxyHarness(closeTimeout=10)
        outbound, outboundTransport = h.connected()
        h.clientLost()
        h.reactor.advance(5)
        outbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        h.reactor.advance(10)
        self.assertEqual(outboundTransport.abortConnectionCalls, 0)


class SessionLogTests(SynchronousTestCase):
    """
    Each session ends with exactly one log event, which never holds a
    password.
    """

    FIELDS = (
        "client",
        "user",
        "command",
        "destination",
        "reply",
        "bytesUp",
        "bytesDown",
        "duration",
        "reason",
    )

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_relayedSession(self) -> None:
        """
        A relayed session is logged once, after both connections are gone,
        with who, where, the reply, the byte counts, the duration and why.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        h.send(request("example.com", 443) + b"12345")
        outbound, _ = h.recorder.last.succeed()
        outbound.dataReceived(b"abcdefg")
        h.reactor.advance(2.5)
        h.clientLost()
        self.assertEqual(sessionEvents(self.observer), [])
        outbound.connectionLost(Failure(ConnectionDone()))
        [event] = sessionEvents(self.observer)
        for name in self.FIELDS:
            self.assertIn(name, event)
        self.assertEqual(event["client"], "127.0.0.1:40000")
        self.assertEqual(event["user"], "alice")
        self.assertEqual(event["command"], "CONNECT")
        self.assertEqual(event["destination"], "example.com:443")
        self.assertEqual(event["reply"], 0)
        self.assertEqual(event["bytesUp"], 5)
        self.assertEqual(event["bytesDown"], 7)
        self.assertEqual(event["duration"], 2.5)
        self.assertEqual(event["reason"], "client closed")
        self.assertIn("session ended", formatEvent(event))

    def test_destinationClosesFirst(self) -> None:
        """
        When the destination closes first, the session is logged once, with
        that as the reason.
        """
        h = ProxyHarness()
        outbound, _ = h.connected(host="::1", port=22)
        outbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(sessionEvents(self.observer), [])
        h.clientLost()
        h.clientLost()
        [event] = sessionEvents(self.observer)
        self.assertEqual(event["destination"], "[::1]:22")
        self.assertEqual(event["reason"], "target closed")

    def test_refusedGreeting(self) -> None:
        """
        A session refused at the greeting is logged once, without a command
        or a reply code.
        """
        h = ProxyHarness()
        h.send(greeting(USER_PASS))
        h.clientLost()
        [event] = sessionEvents(self.observer)
        self.assertIsNone(event["command"])
        self.assertIsNone(event["reply"])
        self.assertEqual(event["bytesUp"], 0)
        self.assertEqual(event["bytesDown"], 0)
        self.assertIn("no acceptable authentication method", event["reason"])

    def test_failedConnect(self) -> None:
        """
        A session whose connection was refused is logged once with reply
        0x05.
        """
        h = ProxyHarness()
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80))
        h.recorder.last.fail(error.ConnectionRefusedError())
        h.clientLost()
        [event] = sessionEvents(self.observer)
        self.assertEqual(event["reply"], 5)
        self.assertEqual(event["reason"], "connection refused")

    def test_unsupportedCommand(self) -> None:
        """
        A session refused for its command is logged once with the command
        and reply 0x07.
        """
        h = ProxyHarness(bindOptions=False)
        h.send(greeting(NO_AUTH) + request("192.0.2.1", 80, command=0x02))
        h.clientLost()
        [event] = sessionEvents(self.observer)
        self.assertEqual(event["command"], "BIND")
        self.assertEqual(event["reply"], 7)

    def test_handshakeTimeout(self) -> None:
        """
        A session that timed out in the handshake is logged once with that
        reason.
        """
        h = ProxyHarness(handshakeTimeout=5)
        h.send(b"\x05")
        h.reactor.advance(5)
        h.clientLost()
        [event] = sessionEvents(self.observer)
        self.assertIn("handshake timeout", event["reason"])
        self.assertEqual(event["duration"], 5)

    def test_clientEOFInHandshake(self) -> None:
        """
        A client that sends EOF in the handshake (before its first byte, in
        a SOCKS5 greeting or request, a SOCKS4 request or an HTTP head) ends
        the session: C{closedBy} is C{client}, not C{proxy}.
        """
        for sent in (
            b"",
            b"\x05",
            greeting(NO_AUTH),
            greeting(NO_AUTH) + request("192.0.2.1", 80)[:5],
            b"\x04\x01\x00\x50",
            b"CONNECT example.com:443 HTTP/1.1\r\n",
        ):
            with self.subTest(sent=sent):
                seen = len(sessionEvents(self.observer))
                h = ProxyHarness()
                if sent:
                    h.send(sent)
                h.protocol.readConnectionLost()
                self.assertTrue(h.transport.disconnecting)
                h.clientLost()
                [event] = sessionEvents(self.observer)[seen:]
                self.assertEqual(
                    (event["closedBy"], event["reason"]),
                    ("client", "client closed during the handshake"),
                )

    def test_protocolBeforeFirstByte(self) -> None:
        """
        A connection that ends before its first byte is logged with the
        listener's protocol when it serves only one, and with none (C{None};
        the metrics' C{unknown}) when it serves several: never a guess.
        """
        for protocols, expected in (
            (("socks4",), "socks4"),
            (("http",), "http"),
            (("socks5",), "socks5"),
            (("socks5", "socks4", "http"), None),
            (("socks4", "http"), None),
        ):
            with self.subTest(protocols=protocols):
                seen = len(sessionEvents(self.observer))
                h = ProxyHarness(protocols=protocols)
                h.clientLost()
                [event] = sessionEvents(self.observer)[seen:]
                self.assertEqual(event["protocol"], expected)

    def test_passwordNeverLogged(self) -> None:
        """
        No logged event, whether the password was right, wrong or the
        checker broke, contains the password.
        """
        good, bad = b"Hunter2-Zq9", b"Wrong-Xk7"
        sessions = [
            (passwordPortal(alice=good), good),
            (passwordPortal(alice=good), bad),
            (Portal(SOCKSRealm(), [BrokenChecker()]), good),
        ]
        for portal, password in sessions:
            h = ProxyHarness(portal=portal)
            h.send(
                greeting(USER_PASS)
                + authRequest(b"alice", password)
                + request("192.0.2.1", 80)
            )
            if h.recorder.endpoints:
                outbound, _ = h.recorder.last.succeed()
                outbound.connectionLost(Failure(ConnectionDone()))
            h.clientLost()
        self.flushLoggedErrors(CheckerBroken)
        self.assertEqual(len(sessionEvents(self.observer)), 3)
        for event in self.observer:
            text = str(event) + formatEvent(event)
            for secret in (good, bad):
                self.assertNotIn(secret.decode("ascii"), text)
                self.assertNotIn(repr(secret), text)


class RealmAvatarTests(SynchronousTestCase):
    """
    The protocol records the avatar's user name for the session.
    """

    def test_avatarNameUsed(self) -> None:
        """
        The session's user is the avatar's user name, not the raw bytes sent.
        """

        @implementer(IRealm)
        class RenamingRealm:
            def requestAvatar(self, avatarId, mind, *interfaces):
                return ISOCKSUser, SOCKSUser("Alice Example"), lambda: None

        h = ProxyHarness(
            portal=Portal(
                RenamingRealm(), [InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")]
            )
        )
        h.send(greeting(USER_PASS) + authRequest(b"alice", b"pw"))
        self.assertEqual(h.protocol.session.user, "Alice Example")
        self.assertIsInstance(h.protocol, SOCKS5ServerProtocol)
