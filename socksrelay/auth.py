# -*- test-case-name: tests.test_auth -*-
"""
The bridge between SOCKS5 method negotiation and L{twisted.cred}.

Method 0x02 (RFC 1929) is offered when the portal has a checker for
L{IUsernamePassword}; method 0x00 when it has one for L{IAnonymous}, or when
there is no portal at all (no C{--auth}).  The realm returns an
L{ISOCKSUser} avatar.
"""

from __future__ import annotations

from typing import Any, Callable

from zope.interface import implementer

from twisted.cred.checkers import ANONYMOUS
from twisted.cred.credentials import IAnonymous, IUsernamePassword
from twisted.cred.portal import IRealm, Portal

from socksrelay.interfaces import ISOCKSUser, IUserRecord
from socksrelay.wire import AuthMethod


@implementer(ISOCKSUser)
class SOCKSUser:
    """
    A client of the proxy.

    @ivar username: the user name, or C{None} when anonymous.
    @ivar groups: a frozenset of group names (empty by default).
    @ivar maxSessions: the user's concurrent-session cap, or C{None}.
    @ivar bandwidthUp: bytes per second client to destination, or C{None}.
    @ivar bandwidthDown: bytes per second destination to client, or C{None}.
    @ivar external: the user's outgoing IP address, or C{None}.
    @ivar expires: POSIX time the account expires, or C{None}.
    """

    def __init__(
        self,
        username: str | None,
        groups: frozenset = frozenset(),
        maxSessions: int | None = None,
        bandwidthUp: int | None = None,
        bandwidthDown: int | None = None,
        external: str | None = None,
        expires: float | None = None,
    ) -> None:
        self.username = username
        self.groups = frozenset(groups)
        self.maxSessions = maxSessions
        self.bandwidthUp = bandwidthUp
        self.bandwidthDown = bandwidthDown
        self.external = external
        self.expires = expires

    @classmethod
    def fromAvatarId(cls, avatarId: Any) -> "SOCKSUser":
        """
        The avatar for a checker's avatar ID: with the user's policy when the
        ID provides L{IUserRecord}, else a name and the defaults.
        """
        if IUserRecord.providedBy(avatarId):
            return cls(
                avatarId.name,
                groups=avatarId.groups,
                maxSessions=avatarId.maxSessions,
                bandwidthUp=avatarId.bandwidthUp,
                bandwidthDown=avatarId.bandwidthDown,
                external=avatarId.external,
                expires=avatarId.expires,
            )
        return cls(_avatarName(avatarId))

    def __repr__(self) -> str:
        return f"<SOCKSUser {self.username!r}>"


def _avatarName(avatarId: Any) -> str | None:
    if avatarId is ANONYMOUS or avatarId == () or avatarId is None:
        return None
    if isinstance(avatarId, bytes):
        return avatarId.decode("utf-8", "backslashreplace")
    return str(avatarId)


@implementer(IRealm)
class SOCKSRealm:
    """
    A realm that gives every authenticated client a L{SOCKSUser}.
    """

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, SOCKSUser, Callable[[], None]]:
        if ISOCKSUser not in interfaces:
            raise NotImplementedError("socksrelay only provides ISOCKSUser")
        return ISOCKSUser, SOCKSUser.fromAvatarId(avatarId), lambda: None


def methodPreference(portal: Portal | None) -> tuple[AuthMethod, ...]:
    """
    The methods this server accepts, most preferred first.

    @param portal: the portal, or C{None} when no authentication is
        configured (then only method 0x00 is accepted).
    """
    if portal is None:
        return (AuthMethod.NO_AUTHENTICATION,)
    interfaces = portal.listCredentialsInterfaces()
    methods = []
    if IUsernamePassword in interfaces:
        methods.append(AuthMethod.USERNAME_PASSWORD)
    if IAnonymous in interfaces:
        methods.append(AuthMethod.NO_AUTHENTICATION)
    return tuple(methods)
