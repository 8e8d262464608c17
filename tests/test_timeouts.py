# -*- test-case-name: tests.test_timeouts -*-
"""
Tests for the relay timeouts: L{socksrelay.relay.Watchdog} and
L{socksrelay.relay.Activity} on a L{Clock}, the idle and half-closed
timeouts of L{socksrelay.server.SOCKS5ServerProtocol}'s relay, their
C{[timeouts]} keys in L{socksrelay.config} and their C{twistd socks5}
options in L{socksrelay.tap}.

The relays run on L{RecordingTransport}s and a L{MemoryReactorClock}
through L{tests.fakes.ProxyHarness}; there is no network.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import tap
from socksrelay.config import ConfigError, parseConfig
from socksrelay.relay import Activity, RelayEnd, Watchdog
from tests.fakes import ProxyHarness, RecordingTransport
from tests.test_limits import temporaryPath

#: How far the clock moves at a time: a fraction of every check interval
#: here, exact in binary, so that each scheduled check runs on time.
STEP = 0.125


def elapse(clock: Any, seconds: float) -> None:
    """
    Move C{clock} on by C{seconds} in small steps, running each delayed call
    at its time (one big C{advance} would run a repeating check only once).
    """
    steps = round(seconds / STEP)
    if abs(steps * STEP - seconds) > 1e-9:
        raise ValueError(f"{seconds} is not a multiple of {STEP}")
    for _ in range(steps):
        clock.advance(STEP)


def watchdogCalls(reactor: Any) -> list[Any]:
    """
    Return the delayed calls on C{reactor} that belong to a L{Watchdog}.
    """
    return [
        call
        for call in reactor.getDelayedCalls()
        if isinstance(getattr(call.func, "__self__", None), Watchdog)
    ]


class WatchdogTests(SynchronousTestCase):
    """
    L{Watchdog} calls its callback once its L{Activity} has stood still for
    the timeout.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.activity = Activity()
        self.expired: list[float] = []

    def watchdog(self, timeout: float = 4.0) -> Watchdog:
        return Watchdog(
            self.clock,
            timeout,
            self.activity,
            lambda: self.expired.append(self.clock.seconds()),
        )

    def test_firesOnceAfterTimeout(self) -> None:
        """
        Without activity the callback runs once, at the timeout, and nothing
        stays scheduled.
        """
        self.watchdog(4.0)
        elapse(self.clock, 3.875)
        self.assertEqual(self.expired, [])
        elapse(self.clock, 0.125)
        self.assertEqual(self.expired, [4.0])
        elapse(self.clock, 100)
        self.assertEqual(self.expired, [4.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_checksFourTimesPerTimeout(self) -> None:
        """
        The watchdog has one call scheduled at a time, a quarter of the
        timeout ahead.
        """
        self.watchdog(8.0)
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 2.0)
        elapse(self.clock, 2.0)
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 4.0)

    def test_activityPostpones(self) -> None:
        """
        Activity restarts the silence: the callback runs between the timeout
        and 1.25 times the timeout after the last activity.
        """
        self.watchdog(4.0)
        elapse(self.clock, 3.5)
        self.activity.count += 1
        elapse(self.clock, 3.375)
        self.assertEqual(self.expired, [])
        elapse(self.clock, 1.25)
        self.assertEqual(len(self.expired), 1)
        last = 3.5
        self.assertTrue(4.0 <= self.expired[0] - last <= 5.0, self.expired)

    def test_steadyActivityNeverExpires(self) -> None:
        """
        Activity in every check interval keeps the watchdog from firing.
        """
        self.watchdog(4.0)
        for _ in range(100):
            self.activity.count += 1
            elapse(self.clock, 1.0)
        self.assertEqual(self.expired, [])

    def test_stopCancels(self) -> None:
        """
        C{stop()} cancels the scheduled check; the callback never runs.
        """
        w = self.watchdog(4.0)
        elapse(self.clock, 2.0)
        w.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        elapse(self.clock, 100)
        self.assertEqual(self.expired, [])

    def test_stopTwice(self) -> None:
        """
        C{stop()} may be called again, and after the watchdog fired.
        """
        w = self.watchdog(4.0)
        elapse(self.clock, 4.0)
        w.stop()
        w.stop()
        self.assertEqual(self.expired, [4.0])

    def test_relayDataCounts(self) -> None:
        """
        Each chunk a L{RelayEnd} relays moves its L{Activity} by one.
        """
        a, b = RelayEnd(), RelayEnd()
        a.makeConnection(RecordingTransport())
        b.makeConnection(RecordingTransport())
        a.peer, b.peer = b, a
        a.activity = b.activity = self.activity
        a.dataReceived(b"one")
        b.dataReceived(b"two")
        a.dataReceived(b"three")
        self.assertEqual(self.activity.count, 3)
        self.assertEqual(b.transport.value(), b"onethree")


class IdleTimeoutTests(SynchronousTestCase):
    """
    C{idleTimeout}: a relay that carries no byte either way for that long is
    closed on both sides.
    """

    def relay(self, **kw: Any) -> tuple[ProxyHarness, Any, RecordingTransport]:
        h = ProxyHarness(**kw)
        outbound, outboundTransport = h.connected()
        return h, outbound, outboundTransport

    def assertOpen(self, h: ProxyHarness, outboundTransport: RecordingTransport) -> None:
        self.assertEqual(h.transport.loseConnectionCalls, 0)
        self.assertEqual(outboundTransport.loseConnectionCalls, 0)
        self.assertIsNone(h.protocol.session.reason)

    def assertClosed(
        self, h: ProxyHarness, outboundTransport: RecordingTransport, reason: str
    ) -> None:
        self.assertEqual(h.transport.loseConnectionCalls, 1)
        self.assertEqual(outboundTransport.loseConnectionCalls, 1)
        self.assertEqual(h.protocol.session.reason, reason)

    def test_silentRelayClosed(self) -> None:
        """
        With C{idleTimeout=10}, a relay with no bytes either way is still
        open just before 10 s and closed (both sides) by 12.5 s, with the
        reason "idle timeout".
        """
        h, _, outboundTransport = self.relay(idleTimeout=10)
        elapse(h.reactor, 9.875)
        self.assertOpen(h, outboundTransport)
        elapse(h.reactor, 2.625)
        self.assertClosed(h, outboundTransport, "idle timeout")

    def test_silenceAfterTrafficClosed(self) -> None:
        """
        The idle time is counted from the last byte: 10 to 12.5 s after it.
        """
        h, outbound, outboundTransport = self.relay(idleTimeout=10)
        elapse(h.reactor, 7)
        outbound.dataReceived(b"answer")
        elapse(h.reactor, 9.875)
        self.assertOpen(h, outboundTransport)
        elapse(h.reactor, 2.625)
        self.assertClosed(h, outboundTransport, "idle timeout")

    def test_trafficClientToTargetKeepsOpen(self) -> None:
        """
        Bytes from the client every 5 s keep the relay open past 30 s.
        """
        h, _, outboundTransport = self.relay(idleTimeout=10)
        for _ in range(8):
            elapse(h.reactor, 5)
            h.send(b"ping")
        self.assertEqual(h.reactor.seconds(), 40)
        self.assertOpen(h, outboundTransport)
        self.assertEqual(outboundTransport.value(), b"ping" * 8)

    def test_trafficTargetToClientKeepsOpen(self) -> None:
        """
        Bytes from the target every 5 s keep the relay open past 30 s, and
        once they stop it is closed.
        """
        h, outbound, outboundTransport = self.relay(idleTimeout=10)
        for _ in range(8):
            elapse(h.reactor, 5)
            outbound.dataReceived(b"pong")
        self.assertOpen(h, outboundTransport)
        elapse(h.reactor, 12.5)
        self.assertClosed(h, outboundTransport, "idle timeout")

    def test_zeroNeverCloses(self) -> None:
        """
        With C{idleTimeout=0} (the default) a silent relay stays open.
        """
        h, _, outboundTransport = self.relay(idleTimeout=0)
        self.assertEqual(watchdogCalls(h.reactor), [])
        elapse(h.reactor, 3600)
        self.assertOpen(h, outboundTransport)

    def test_noWatchdogWithoutTimeouts(self) -> None:
        """
        With both relay timeouts off, nothing is scheduled for the relay.
        """
        h, _, _ = self.relay(idleTimeout=0, halfClosedTimeout=0)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_abortAfterCloseTimeout(self) -> None:
        """
        A side that does not finish closing within C{closeTimeout} of the
        idle timeout is aborted.
        """
        h, _, outboundTransport = self.relay(idleTimeout=10, closeTimeout=3)
        elapse(h.reactor, 10)
        self.assertEqual(h.transport.abortConnectionCalls, 0)
        elapse(h.reactor, 3)
        self.assertEqual(h.transport.abortConnectionCalls, 1)
        self.assertEqual(outboundTransport.abortConnectionCalls, 1)

    def test_noWatchdogAfterConnectionLost(self) -> None:
        """
        Once both sides are lost, no watchdog call stays on the reactor.
        """
        h, outbound, _ = self.relay(idleTimeout=10, halfClosedTimeout=20)
        h.protocol.readConnectionLost()
        self.assertEqual(len(watchdogCalls(h.reactor)), 2)
        h.clientLost()
        outbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(watchdogCalls(h.reactor), [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_noWatchdogAfterTimeout(self) -> None:
        """
        After the idle timeout fired and both sides are lost, nothing stays
        scheduled.
        """
        h, outbound, _ = self.relay(idleTimeout=10)
        elapse(h.reactor, 12.5)
        h.clientLost()
        outbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_sessionLogged(self) -> None:
        """
        The session that timed out is logged once both sides are gone, with
        the idle timeout as its reason.
        """
        ended: list[Any] = []

        class Observer:
            def sessionStarted(self, session: Any) -> None:
                pass

            def eventCounted(self, *args: Any) -> None:
                pass

            def sessionEnded(self, session: Any) -> None:
                ended.append(session.reason)

        h = ProxyHarness(idleTimeout=10)
        h.factory.observers.append(Observer())
        h.protocol.session.observers = tuple(h.factory.observers)
        outbound, _ = h.connected()
        elapse(h.reactor, 12.5)
        h.clientLost()
        outbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(ended, ["idle timeout"])

    def test_liveSessionKeepsItsTimeout(self) -> None:
        """
        A relay keeps the idle timeout it started with when the factory's
        changes later.
        """
        h, _, outboundTransport = self.relay(idleTimeout=10)
        h.factory.idleTimeout = 0
        elapse(h.reactor, 12.5)
        self.assertClosed(h, outboundTransport, "idle timeout")


class HalfClosedTimeoutTests(SynchronousTestCase):
    """
    C{halfClosedTimeout}: once one side has finished, the relay is closed if
    no byte moves for that long.
    """

    def relay(self, **kw: Any) -> tuple[ProxyHarness, Any, RecordingTransport]:
        h = ProxyHarness(**kw)
        outbound, outboundTransport = h.connected()
        return h, outbound, outboundTransport

    def test_silenceAfterClientEOF(self) -> None:
        """
        After the client's EOF (passed on as a write shutdown), 20 s of
        silence with C{halfClosedTimeout=20} closes both sides by 25 s, with
        the reason "half-closed timeout".
        """
        h, _, outboundTransport = self.relay(halfClosedTimeout=20)
        elapse(h.reactor, 100)
        h.protocol.readConnectionLost()
        self.assertEqual(outboundTransport.loseWriteConnectionCalls, 1)
        elapse(h.reactor, 19.875)
        self.assertEqual(h.transport.loseConnectionCalls, 0)
        self.assertEqual(outboundTransport.loseConnectionCalls, 0)
        elapse(h.reactor, 5.125)
        self.assertEqual(h.transport.loseConnectionCalls, 1)
        self.assertEqual(outboundTransport.loseConnectionCalls, 1)
        self.assertEqual(h.protocol.session.reason, "half-closed timeout")

    def test_silenceAfterTargetEOF(self) -> None:
        """
        The target's EOF starts the half-closed timeout too.
        """
        h, outbound, outboundTransport = self.relay(halfClosedTimeout=20)
        outbound.readConnectionLost()
        self.assertEqual(h.transport.loseWriteConnectionCalls, 1)
        elapse(h.reactor, 19.875)
        self.assertEqual(h.transport.loseConnectionCalls, 0)
        elapse(h.reactor, 5.125)
        self.assertEqual(h.transport.loseConnectionCalls, 1)
        self.assertEqual(outboundTransport.loseConnectionCalls, 1)
        self.assertEqual(h.protocol.session.reason, "half-closed timeout")

    def test_dataTheOtherWayKeepsOpen(self) -> None:
        """
        After the client's EOF, data flowing from the target every 5 s keeps
        the relay open; once it stops, the relay is closed.
        """
        h, outbound, outboundTransport = self.relay(halfClosedTimeout=20)
        h.protocol.readConnectionLost()
        for _ in range(20):
            elapse(h.reactor, 5)
            outbound.dataReceived(b"still coming")
        self.assertEqual(h.transport.value(), b"still coming" * 20)
        self.assertEqual(h.transport.loseConnectionCalls, 0)
        self.assertEqual(outboundTransport.loseConnectionCalls, 0)
        elapse(h.reactor, 25)
        self.assertEqual(h.transport.loseConnectionCalls, 1)
        self.assertEqual(outboundTransport.loseConnectionCalls, 1)

    def test_noTimeoutBeforeEOF(self) -> None:
        """
        Without an EOF a silent relay is not closed by the half-closed
        timeout.
        """
        h, _, outboundTransport = self.relay(halfClosedTimeout=20)
        self.assertEqual(watchdogCalls(h.reactor), [])
        elapse(h.reactor, 3600)
        self.assertEqual(h.transport.loseConnectionCalls, 0)
        self.assertEqual(outboundTransport.loseConnectionCalls, 0)

    def test_zeroNeverCloses(self) -> None:
        """
        With C{halfClosedTimeout=0} a half-closed relay stays open.
        """
        h, _, outboundTransport = self.relay(halfClosedTimeout=0)
        h.protocol.readConnectionLost()
        self.assertEqual(watchdogCalls(h.reactor), [])
        elapse(h.reactor, 3600)
        self.assertEqual(h.transport.loseConnectionCalls, 0)
        self.assertEqual(outboundTransport.loseConnectionCalls, 0)

    def test_defaultSixtySeconds(self) -> None:
        """
        By default a half-closed relay is closed after 60 to 75 s of
        silence.
        """
        h, _, outboundTransport = self.relay()
        self.assertEqual(h.factory.halfClosedTimeout, 60.0)
        h.protocol.readConnectionLost()
        elapse(h.reactor, 59.875)
        self.assertEqual(outboundTransport.loseConnectionCalls, 0)
        elapse(h.reactor, 15.125)
        self.assertEqual(outboundTransport.loseConnectionCalls, 1)

    def test_oneWatchdogForBothEOFs(self) -> None:
        """
        An EOF from each side starts one half-closed watchdog, not two.
        """
        h, outbound, _ = self.relay(halfClosedTimeout=20)
        outbound.readConnectionLost()
        h.protocol.readConnectionLost()
        self.assertEqual(len(watchdogCalls(h.reactor)), 1)

    def test_noWatchdogAfterConnectionLost(self) -> None:
        """
        A half-closed relay whose sides are then lost leaves no watchdog
        call on the reactor.
        """
        h, outbound, _ = self.relay(halfClosedTimeout=20)
        h.protocol.readConnectionLost()
        self.assertEqual(len(watchdogCalls(h.reactor)), 1)
        outbound.connectionLost(Failure(ConnectionDone()))
        h.clientLost()
        self.assertEqual(watchdogCalls(h.reactor), [])

    def test_idleAndHalfClosedTogether(self) -> None:
        """
        With both timeouts, the shorter one closes a half-closed relay.
        """
        h, _, outboundTransport = self.relay(idleTimeout=100, halfClosedTimeout=20)
        h.protocol.readConnectionLost()
        elapse(h.reactor, 25)
        self.assertEqual(outboundTransport.loseConnectionCalls, 1)
        self.assertEqual(h.protocol.session.reason, "half-closed timeout")


class TimeoutConfigTests(SynchronousTestCase):
    """
    The idle and half-closed keys of C{[timeouts]} and their command-line
    options.
    """

    def test_idleAndHalfClosedRead(self) -> None:
        """
        C{idle} and C{half-closed} become the C{idle-timeout} and
        C{half-closed-timeout} options.
        """
        config = parseConfig("[timeouts]\nidle = 300\nhalf-closed = 45.5\n")
        self.assertEqual(
            config.timeouts, {"idle-timeout": 300.0, "half-closed-timeout": 45.5}
        )

    def test_zeroAccepted(self) -> None:
        """
        0 (no limit) is accepted for C{idle} and C{half-closed}.
        """
        config = parseConfig("[timeouts]\nidle = 0\nhalf-closed = 0\n")
        self.assertEqual(config.timeouts, {"idle-timeout": 0.0, "half-closed-timeout": 0.0})

    def test_zeroRefusedForOthers(self) -> None:
        """
        0 is refused for a timeout that must be positive, naming the line.
        """
        e = self.assertRaises(ConfigError, parseConfig, "[timeouts]\n\nhandshake = 0\n")
        self.assertIn("line 3", str(e))
        self.assertIn("positive", str(e))

    def test_negativeRefused(self) -> None:
        """
        A negative idle or half-closed timeout is refused, naming the line.
        """
        for key in ("idle", "half-closed"):
            e = self.assertRaises(ConfigError, parseConfig, f"[timeouts]\n{key} = -1\n")
            self.assertIn("line 2", str(e))
            self.assertIn("non-negative", str(e))

    def test_booleanRefused(self) -> None:
        """
        A boolean is not a number of seconds.
        """
        e = self.assertRaises(ConfigError, parseConfig, "[timeouts]\nidle = true\n")
        self.assertIn("line 2", str(e))

    def test_options(self) -> None:
        """
        C{--idle-timeout} and C{--half-closed-timeout} reach the factory.
        """
        options = tap.Options()
        options.parseOptions(["--idle-timeout", "10", "--half-closed-timeout", "0"])
        factory = tap.makeFactory(options, MemoryReactorClock())
        self.assertEqual((factory.idleTimeout, factory.halfClosedTimeout), (10.0, 0.0))
        self.assertEqual(
            options["overrides"], {"idle-timeout": 10.0, "half-closed-timeout": 0.0}
        )

    def test_optionDefaults(self) -> None:
        """
        By default there is no idle timeout and a 60 s half-closed one.
        """
        options = tap.Options()
        options.parseOptions([])
        factory = tap.makeFactory(options, MemoryReactorClock())
        self.assertEqual((factory.idleTimeout, factory.halfClosedTimeout), (0.0, 60.0))
        self.assertEqual(options["overrides"], {})

    def test_negativeOptionRefused(self) -> None:
        """
        A negative C{--idle-timeout} or C{--half-closed-timeout} is a usage
        error.
        """
        for name in ("--idle-timeout", "--half-closed-timeout"):
            self.assertRaises(usage.UsageError, tap.Options().parseOptions, [name, "-1"])

    def test_fileAndCommandLine(self) -> None:
        """
        The file sets the idle timeout unless the command line does.
        """
        path = temporaryPath(self)
        with open(path, "w") as f:
            f.write("[timeouts]\nidle = 300\nhalf-closed = 30\n")
        options = tap.Options()
        options.parseOptions(["--config", path, "--idle-timeout", "0"])
        factory = tap.makeFactory(options, MemoryReactorClock())
        self.assertEqual((factory.idleTimeout, factory.halfClosedTimeout), (0.0, 30.0))
