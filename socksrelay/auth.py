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

from socksrelay.interfaces import ISOCKSUser
from socksrelay.wire import AuthMethod


@implementer(ISOCKSUser)
class SOCKSUser:
    """
    A client of the proxy.

    @ivar username: the user name, or C{None} when anonymous.
    """

    def __init__(self, username: str | None) -> None:
        self.username = username

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
        return ISOCKSUser, SOCKSUser(_avatarName(avatarId)), lambda: None


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
