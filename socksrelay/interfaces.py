# -*- test-case-name: tests.test_auth -*-
"""
Contracts shared across socksrelay's modules.
"""

from zope.interface import Attribute, Interface


class ISOCKSUser(Interface):
    """
    The avatar a cred realm returns for a client of the proxy: who the client
    is, as far as policy and logs are concerned.
    """

    username = Attribute(
        "The authenticated user name as text, or C{None} for an anonymous "
        "client."
    )


class ISessionObserver(Interface):
    """
    Something told about every session: access logs, metrics, the control
    API.  Called on the reactor thread; must not block or raise.
    """

    def sessionStarted(session):
        """
        A client connected; C{session} is a L{socksrelay.session.Session}.
        """

    def eventCounted(session, event, fields):
        """
        Something countable happened: C{event} is C{"auth-failure"},
        C{"denied"} (with C{rule}), C{"limit"} (with C{reason}) or
        C{"udp-drop"} (with C{reason}); C{fields} is a dict.
        """

    def sessionEnded(session):
        """
        The session is over and logged; its fields are final.
        """
