# -*- test-case-name: tests.test_throttle -*-
"""
Per-user bandwidth limits, shared by all sessions of a user.

A L{UserThrottle} holds two token buckets (C{"up"}: client to target,
C{"down"}: target to client), in bytes per second.  A relay end spends tokens
for each chunk it relays; when its direction's bucket goes negative the end's
reading is paused (through its L{socksrelay.relay.ReadGate}, so that the
peer's write buffer draining cannot resume it) and a timer resumes every
paused end of that direction once the debt is paid.  Nothing is buffered
beyond the one chunk already read.  UDP datagrams over the limit are
dropped (L{UserThrottle.allowDatagram}).  Plain-HTTP forwarding spends from
the same buckets (L{socksrelay.httpproxy}).

A bucket holds a burst of L{DEFAULT_BURST_SECONDS} of its rate (the
C{[limits] bandwidth-burst} setting), and a throttled end reads at most that
much at a time (L{UserThrottle.readSize}), so that a transfer of a few
seconds moves at the rate, give or take a burst and one read.

L{ThrottleRegistry} (one per server factory) keeps one throttle per user
name, counting the sessions that use it.  When the user's last session ends
its timers are cancelled, but the throttle is kept until its buckets would
have refilled (a user cannot get a fresh burst by reconnecting, nor leave a
debt unpaid); then it equals a new one and is forgotten, at the next use of
the registry.
"""

from __future__ import annotations

import math
from typing import Any

#: The smallest burst (bucket capacity) in bytes, and the smallest read of a
#: throttled end: a slow rate still reads in chunks worth a system call.
MIN_BURST = 4096

#: The default burst: this many seconds' worth of a user's rate.
DEFAULT_BURST_SECONDS = 0.1

#: The registry looks for users to forget at most this often (seconds).
SWEEP_INTERVAL = 1.0

UP = "up"
DOWN = "down"


class TokenBucket:
    """
    A bucket of C{rate} tokens (bytes) per second holding up to C{capacity};
    spending may take it below zero (a debt to be paid before more reading).
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self._last = now

    def refill(self, now: float) -> float:
        """
        Add the tokens earned since the last refill; return the balance.
        """
        if now > self._last:
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = max(self._last, now)
        return self.tokens

    def delay(self) -> float:
        """
        Seconds until the balance is back to zero (0 when it is not negative).
        """
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def fullIn(self) -> float:
        """
        Seconds until the bucket is full again, as of its last refill.
        """
        return max(0.0, (self.capacity - self.tokens) / self.rate)


def burstFor(rate: float, burstSeconds: float = DEFAULT_BURST_SECONDS) -> float:
    """
    The capacity of a bucket of C{rate}: C{burstSeconds} worth of it, and no
    less than L{MIN_BURST}.
    """
    return max(rate * burstSeconds, float(MIN_BURST))


class UserThrottle:
    """
    The bandwidth budget of one user: a bucket per direction, the ends paused
    waiting for tokens, and a timer per direction.

    @ivar rates: C{{"up": bytes/s or None, "down": ...}}; C{None} or 0 is
        unlimited.
    """

    stopped = False

    def __init__(
        self,
        reactor: Any,
        up: int | None,
        down: int | None,
        burstSeconds: float = DEFAULT_BURST_SECONDS,
    ) -> None:
        self._reactor = reactor
        self.burstSeconds = burstSeconds
        self._buckets: dict[str, TokenBucket] = {}
        self._paused: dict[str, list[Any]] = {UP: [], DOWN: []}
        self._timers: dict[str, Any] = {}
        self.rates: dict[str, int | None] = {}
        self.setRates(up, down)

    def setRates(
        self, up: int | None, down: int | None, burstSeconds: float | None = None
    ) -> None:
        """
        Set (or change) the limits, and the burst if given.  A changed
        bucket keeps its balance (no more than its new capacity): changing
        a rate neither forgives a debt nor grants a fresh burst.
        """
        if burstSeconds is not None:
            self.burstSeconds = burstSeconds
        now = self._reactor.seconds()
        for direction, rate in ((UP, up), (DOWN, down)):
            rate = rate or None
            old = self._buckets.get(direction)
            if rate is None:
                self.rates[direction] = None
                if old is not None:
                    del self._buckets[direction]
                    self._wake(direction)
                continue
            capacity = burstFor(rate, self.burstSeconds)
            if old is not None and old.rate == rate and old.capacity == capacity:
                continue
            self.rates[direction] = rate
            bucket = TokenBucket(rate, capacity, now)
            if old is not None:
                bucket.tokens = min(capacity, old.refill(now))
            self._buckets[direction] = bucket
            timer = self._timers.pop(direction, None)
            if timer is not None and timer.active():
                timer.cancel()
            if self._paused[direction]:
                self._timers[direction] = self._reactor.callLater(
                    bucket.delay(), self._refilled, direction
                )

    def readSize(self, direction: str, default: int) -> int:
        """
        How much an end of C{direction} should read at a time: at most
        C{default}, and no more than the bucket holds (at least
        L{MIN_BURST}), so that one read cannot overshoot the limit by more
        than a burst.
        """
        bucket = self._buckets.get(direction)
        if bucket is None:
            return default
        return max(MIN_BURST, min(default, int(bucket.capacity)))

    def fullAt(self) -> float:
        """
        When every bucket will be full again (now, if they are): from then
        on this throttle is the same as a new one.
        """
        now = self._reactor.seconds()
        later = 0.0
        for bucket in self._buckets.values():
            bucket.refill(now)
            later = max(later, bucket.fullIn())
        return now + later

    def limits(self, direction: str) -> bool:
        """
        Whether C{direction} is limited.
        """
        return direction in self._buckets

    def tokens(self, direction: str) -> float | None:
        """
        The balance of C{direction}'s bucket now (C{None} when unlimited).
        """
        bucket = self._buckets.get(direction)
        if bucket is None:
            return None
        return bucket.refill(self._reactor.seconds())

    def spent(self, end: Any, direction: str, count: int) -> None:
        """
        C{end} relayed C{count} bytes in C{direction}: take them from the
        bucket, and pause C{end}'s reading if that leaves a debt.
        """
        bucket = self._buckets.get(direction)
        if bucket is None or self.stopped:
            return
        bucket.refill(self._reactor.seconds())
        bucket.tokens -= count
        if bucket.tokens < 0:
            self._pause(end, direction)

    def allowDatagram(self, direction: str, count: int) -> bool:
        """
        Whether a datagram of C{count} bytes may pass now (its tokens are
        then taken); a datagram over the limit is to be dropped, not queued.
        One larger than the whole bucket passes when the bucket is full,
        leaving a debt that later datagrams wait for.
        """
        bucket = self._buckets.get(direction)
        if bucket is None:
            return True
        if bucket.refill(self._reactor.seconds()) < min(count, bucket.capacity):
            return False
        bucket.tokens -= count
        return True

    def _pause(self, end: Any, direction: str) -> None:
        paused = self._paused[direction]
        if end not in paused:
            paused.append(end)
            end.pauseReading("throttle")
        if direction not in self._timers:
            self._timers[direction] = self._reactor.callLater(
                self._buckets[direction].delay(), self._refilled, direction
            )

    def _refilled(self, direction: str) -> None:
        self._timers.pop(direction, None)
        bucket = self._buckets.get(direction)
        if bucket is not None:
            bucket.refill(self._reactor.seconds())
            if bucket.tokens < 0:
                self._timers[direction] = self._reactor.callLater(
                    bucket.delay(), self._refilled, direction
                )
                return
        self._wake(direction)

    def _wake(self, direction: str) -> None:
        ends, self._paused[direction] = self._paused[direction], []
        timer = self._timers.pop(direction, None)
        if timer is not None and timer.active():
            timer.cancel()
        for end in ends:
            end.resumeReading("throttle")

    def detach(self, end: Any) -> None:
        """
        C{end} is gone: forget it, and stop a timer nobody waits for.
        """
        for direction, paused in self._paused.items():
            if end in paused:
                paused.remove(end)
                if not paused:
                    timer = self._timers.pop(direction, None)
                    if timer is not None and timer.active():
                        timer.cancel()

    def stop(self) -> None:
        """
        Cancel every timer (the last session ended); the balance stays, for
        the user's next session (L{ThrottleRegistry}).
        """
        self.stopped = True
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._paused = {UP: [], DOWN: []}

    def pending(self) -> int:
        """
        How many timers are scheduled (for tests and introspection).
        """
        return len(self._timers)


def avatarRates(avatar: Any) -> tuple[int | None, int | None]:
    """
    The C{(bandwidthUp, bandwidthDown)} of an avatar; C{None} where unset.
    """
    return (
        getattr(avatar, "bandwidthUp", None) or None,
        getattr(avatar, "bandwidthDown", None) or None,
    )


class ThrottleRegistry:
    """
    The throttles of a server, one per user name, shared by that user's
    sessions.  When the last of them ends the throttle's timers stop, but
    it is kept until its buckets would be full again, so that the user's
    next session continues from its balance; then it is forgotten.  Idle
    throttles are looked for at most every L{SWEEP_INTERVAL} seconds, when
    a session starts or ends: no timer per user, and the table holds no
    more than the users seen within a refill time.

    @ivar burstSeconds: how many seconds' worth of its rate a bucket holds
        (at least L{MIN_BURST} bytes).
    """

    def __init__(self, reactor: Any, burstSeconds: float = DEFAULT_BURST_SECONDS) -> None:
        self.reactor = reactor
        self.burstSeconds = burstSeconds
        self._throttles: dict[str, tuple[UserThrottle, int]] = {}
        #: Users without a live session, to when their buckets are full.
        self._idle: dict[str, float] = {}
        self._nextSweep = math.inf
        self._lastSweep = -math.inf

    def acquire(self, user: str | None, up: int | None, down: int | None) -> UserThrottle:
        """
        A session of C{user} with these limits starts: the user's throttle
        (made if needed, its rates updated).  C{user} C{None} (anonymous)
        gets a throttle of its own, not shared.
        """
        self._sweep()
        if user is None:
            return UserThrottle(self.reactor, up, down, self.burstSeconds)
        entry = self._throttles.get(user)
        if entry is None:
            throttle = UserThrottle(self.reactor, up, down, self.burstSeconds)
            self._throttles[user] = (throttle, 1)
            return throttle
        throttle, count = entry
        if count == 0:
            self._idle.pop(user, None)
            throttle.stopped = False
        throttle.setRates(up, down, self.burstSeconds)
        self._throttles[user] = (throttle, count + 1)
        return throttle

    def release(self, user: str | None, throttle: UserThrottle) -> None:
        """
        A session that acquired C{throttle} for C{user} ended.
        """
        entry = self._throttles.get(user) if user is not None else None
        if entry is None or entry[0] is not throttle or entry[1] <= 0:
            throttle.stop()
            return
        assert user is not None
        count = entry[1] - 1
        if count > 0:
            self._throttles[user] = (throttle, count)
            return
        throttle.stop()
        fullAt = throttle.fullAt()
        if fullAt <= self.reactor.seconds():
            del self._throttles[user]
        else:
            self._throttles[user] = (throttle, 0)
            self._idle[user] = fullAt
            self._nextSweep = min(self._nextSweep, fullAt)
        self._sweep()

    def _sweep(self) -> None:
        """
        Forget the idle throttles whose buckets are full again (at most every
        L{SWEEP_INTERVAL} seconds, and only when one may be).
        """
        now = self.reactor.seconds()
        if now < self._nextSweep or now < self._lastSweep + SWEEP_INTERVAL:
            return
        self._lastSweep = now
        soonest = math.inf
        for user, fullAt in list(self._idle.items()):
            if fullAt <= now:
                del self._idle[user]
                del self._throttles[user]
            else:
                soonest = min(soonest, fullAt)
        self._nextSweep = soonest

    def get(self, user: str) -> UserThrottle | None:
        """
        The throttle of C{user}, if a session of theirs is live or their
        balance is still remembered.
        """
        entry = self._throttles.get(user)
        return None if entry is None else entry[0]

    def live(self, user: str) -> int:
        """
        How many sessions of C{user} hold their throttle now.
        """
        entry = self._throttles.get(user)
        return 0 if entry is None else entry[1]

    def __len__(self) -> int:
        """
        How many users the registry remembers (live or refilling).
        """
        return len(self._throttles)
