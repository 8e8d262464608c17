# -*- test-case-name: tests.test_auth -*-
"""
Tests for L{socksrelay.auth}: which SOCKS5 methods a portal allows, and the
realm that hands out L{ISOCKSUser} avatars.
"""

from __future__ import annotations

from zope.interface import Interface, implementer
from zope.interface.verify import verifyObject

from twisted.cred.checkers import (
    ANONYMOUS,
    AllowAnonymousAccess,
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.credentials import (
    Anonymous,
    IUsernameHashedPassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.auth import SOCKSRealm, SOCKSUser, methodPreference
from socksrelay.interfaces import ISOCKSUser
from socksrelay.wire import AuthMethod


@implementer(ICredentialsChecker)
class HashedOnlyChecker:
    """
    A checker that only understands L{IUsernameHashedPassword}, which the
    RFC 1929 sub-negotiation never produces.
    """

    credentialInterfaces = (IUsernameHashedPassword,)

    def requestAvatarId(self, credentials):
        raise UnauthorizedLogin()


class IUnrelated(Interface):
    """
    An avatar interface socksrelay does not provide.
    """


class MethodPreferenceTests(SynchronousTestCase):
    """
    L{methodPreference} derives the accepted methods from the portal.
    """

    def test_noPortal(self) -> None:
        """
        Without a portal only method 0x00 is accepted.
        """
        self.assertEqual(methodPreference(None), (AuthMethod.NO_AUTHENTICATION,))

    def test_usernamePasswordPortal(self) -> None:
        """
        A portal with a username/password checker accepts only method 0x02.
        """
        portal = Portal(
            SOCKSRealm(), [InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")]
        )
        self.assertEqual(methodPreference(portal), (AuthMethod.USERNAME_PASSWORD,))

    def test_anonymousPortal(self) -> None:
        """
        A portal with an anonymous checker accepts only method 0x00.
        """
        portal = Portal(SOCKSRealm(), [AllowAnonymousAccess()])
        self.assertEqual(methodPreference(portal), (AuthMethod.NO_AUTHENTICATION,))

    def test_bothPreferUsernamePassword(self) -> None:
        """
        A portal with both kinds of checker prefers 0x02 over 0x00, whatever
        order the checkers were registered in.
        """
        password = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")
        for checkers in ([password, AllowAnonymousAccess()],
                         [AllowAnonymousAccess(), password]):
            portal = Portal(SOCKSRealm(), checkers)
            self.assertEqual(
                methodPreference(portal),
                (AuthMethod.USERNAME_PASSWORD, AuthMethod.NO_AUTHENTICATION),
            )

    def test_emptyPortal(self) -> None:
        """
        A portal without checkers accepts no method at all.
        """
        self.assertEqual(methodPreference(Portal(SOCKSRealm(), [])), ())

    def test_hashedOnlyChecker(self) -> None:
        """
        A checker that cannot check plain username/password credentials
        does not enable method 0x02.
        """
        portal = Portal(SOCKSRealm(), [HashedOnlyChecker()])
        self.assertEqual(methodPreference(portal), ())


class SOCKSRealmTests(SynchronousTestCase):
    """
    L{SOCKSRealm} gives every client an L{ISOCKSUser}.
    """

    def test_provides(self) -> None:
        """
        The realm provides L{IRealm} and its avatars L{ISOCKSUser}.
        """
        self.assertTrue(verifyObject(IRealm, SOCKSRealm()))
        self.assertTrue(verifyObject(ISOCKSUser, SOCKSUser("alice")))

    def test_bytesAvatarId(self) -> None:
        """
        A bytes avatar ID becomes the avatar's user name as text.
        """
        interface, avatar, logout = SOCKSRealm().requestAvatar(
            b"alice", None, ISOCKSUser
        )
        self.assertIs(interface, ISOCKSUser)
        self.assertTrue(ISOCKSUser.providedBy(avatar))
        self.assertEqual(avatar.username, "alice")
        self.assertIsInstance(avatar.username, str)
        self.assertIsNone(logout())

    def test_utf8AvatarId(self) -> None:
        """
        A UTF-8 avatar ID is decoded.
        """
        _, avatar, _ = SOCKSRealm().requestAvatar(
            "jos\u00e9".encode("utf-8"), None, ISOCKSUser
        )
        self.assertEqual(avatar.username, "jos\u00e9")

    def test_undecodableAvatarId(self) -> None:
        """
        An avatar ID that is not UTF-8 still becomes text, with the odd bytes
        escaped.
        """
        _, avatar, _ = SOCKSRealm().requestAvatar(b"a\xffb", None, ISOCKSUser)
        self.assertEqual(avatar.username, "a\\xffb")

    def test_anonymous(self) -> None:
        """
        The anonymous avatar ID gives an avatar without a user name.
        """
        _, avatar, _ = SOCKSRealm().requestAvatar(ANONYMOUS, None, ISOCKSUser)
        self.assertTrue(ISOCKSUser.providedBy(avatar))
        self.assertIsNone(avatar.username)

    def test_otherInterfaces(self) -> None:
        """
        Asking for anything but L{ISOCKSUser} raises L{NotImplementedError}.
        """
        self.assertRaises(
            NotImplementedError, SOCKSRealm().requestAvatar, b"alice", None, IUnrelated
        )

    def test_ISOCKSUserAmongOthers(self) -> None:
        """
        When L{ISOCKSUser} is one of several interfaces asked for, it is the
        one provided.
        """
        interface, avatar, _ = SOCKSRealm().requestAvatar(
            b"alice", None, IUnrelated, ISOCKSUser
        )
        self.assertIs(interface, ISOCKSUser)
        self.assertEqual(avatar.username, "alice")

    def test_loginThroughPortal(self) -> None:
        """
        A portal with the realm logs in a user with good credentials and
        refuses bad ones.
        """
        portal = Portal(
            SOCKSRealm(), [InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")]
        )
        _, avatar, _ = self.successResultOf(
            portal.login(UsernamePassword(b"alice", b"pw"), None, ISOCKSUser)
        )
        self.assertEqual(avatar.username, "alice")
        self.failureResultOf(
            portal.login(UsernamePassword(b"alice", b"no"), None, ISOCKSUser),
            UnauthorizedLogin,
        )

    def test_anonymousLoginThroughPortal(self) -> None:
        """
        A portal with the realm and an anonymous checker logs in an
        anonymous client as an avatar without a user name.
        """
        portal = Portal(SOCKSRealm(), [AllowAnonymousAccess()])
        _, avatar, _ = self.successResultOf(
            portal.login(Anonymous(), None, ISOCKSUser)
        )
        self.assertIsNone(avatar.username)

    def test_repr(self) -> None:
        """
        An avatar's repr names the user and nothing else.
        """
        self.assertEqual(repr(SOCKSUser("alice")), "<SOCKSUser 'alice'>")
