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
dropped (L{UserThrottle.allowDatagram}).

L{ThrottleRegistry} (one per server factory) keeps one throttle per user
name, counting the sessions that use it; the throttle is removed, and its
timers cancelled, when the user's last session ends.
"""

from __future__ import annotations

from typing import Any

#: The smallest burst (bucket capacity) in bytes.
MIN_BURST = 65536

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


def burstFor(rate: float, burstSeconds: float) -> float:
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
        burstSeconds: float = 1.0,
    ) -> None:
        self._reactor = reactor
        self._burstSeconds = burstSeconds
        self._buckets: dict[str, TokenBucket] = {}
        self._paused: dict[str, list[Any]] = {UP: [], DOWN: []}
        self._timers: dict[str, Any] = {}
        self.rates: dict[str, int | None] = {}
        self.setRates(up, down)

    def setRates(self, up: int | None, down: int | None) -> None:
        """
        Set (or change) the limits; a changed rate starts a full bucket.
        """
        now = self._reactor.seconds()
        for direction, rate in ((UP, up), (DOWN, down)):
            rate = rate or None
            if self.rates.get(direction) == rate and (rate is None or direction in self._buckets):
                continue
            self.rates[direction] = rate
            if rate is None:
                self._buckets.pop(direction, None)
                self._wake(direction)
            else:
                self._buckets[direction] = TokenBucket(
                    rate, burstFor(rate, self._burstSeconds), now
                )

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
        """
        bucket = self._buckets.get(direction)
        if bucket is None:
            return True
        if bucket.refill(self._reactor.seconds()) < count:
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
        Cancel every timer (the last session ended).
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
    sessions and removed when the last of them ends.

    @ivar burstSeconds: how many seconds' worth of its rate a bucket holds
        (at least L{MIN_BURST} bytes).
    """

    def __init__(self, reactor: Any, burstSeconds: float = 1.0) -> None:
        self.reactor = reactor
        self.burstSeconds = burstSeconds
        self._throttles: dict[str, tuple[UserThrottle, int]] = {}

    def acquire(self, user: str | None, up: int | None, down: int | None) -> UserThrottle:
        """
        A session of C{user} with these limits starts: the user's throttle
        (made if needed, its rates updated).  C{user} C{None} (anonymous)
        gets a throttle of its own, not shared.
        """
        if user is None:
            return UserThrottle(self.reactor, up, down, self.burstSeconds)
        entry = self._throttles.get(user)
        if entry is None:
            throttle = UserThrottle(self.reactor, up, down, self.burstSeconds)
            self._throttles[user] = (throttle, 1)
            return throttle
        throttle, count = entry
        throttle.setRates(up, down)
        self._throttles[user] = (throttle, count + 1)
        return throttle

    def release(self, user: str | None, throttle: UserThrottle) -> None:
        """
        A session that acquired C{throttle} for C{user} ended.
        """
        entry = self._throttles.get(user) if user is not None else None
        if entry is None or entry[0] is not throttle:
            throttle.stop()
            return
        count = entry[1] - 1
        if count <= 0:
            del self._throttles[user]  # type: ignore[arg-type]
            throttle.stop()
        else:
            self._throttles[user] = (throttle, count)  # type: ignore[index]

    def get(self, user: str) -> UserThrottle | None:
        """
        The throttle of C{user}, if a session of theirs is live.
        """
        entry = self._throttles.get(user)
        return None if entry is None else entry[0]

    def __len__(self) -> int:
        return len(self._throttles)
