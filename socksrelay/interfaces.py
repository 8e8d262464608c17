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
    groups = Attribute("The user's groups: a frozenset of text, empty by default.")
    maxSessions = Attribute(
        "The most concurrent sessions the user may have, or C{None} for no "
        "per-user limit."
    )
    bandwidthUp = Attribute(
        "Bytes per second the user may send (client to destination), across "
        "all their sessions, or C{None} for no limit."
    )
    bandwidthDown = Attribute(
        "Bytes per second the user may receive (destination to client), "
        "across all their sessions, or C{None} for no limit."
    )
    external = Attribute(
        "The outgoing IP address (text) for the user's connections and UDP "
        "sockets, or C{None} to use the server's."
    )
    expires = Attribute(
        "POSIX time after which the user is refused, or C{None}."
    )


class IUserRecord(Interface):
    """
    What a cred checker may return as the avatar ID to give its user policy
    (L{socksrelay.users.UserRecord} provides it): the realm copies these
    attributes into the L{ISOCKSUser} avatar.  Any other avatar ID gets the
    defaults.
    """

    name = Attribute("The user name as text.")
    groups = Attribute("A frozenset of group names.")
    maxSessions = Attribute("An int or C{None}.")
    bandwidthUp = Attribute("Bytes per second, an int or C{None}.")
    bandwidthDown = Attribute("Bytes per second, an int or C{None}.")
    external = Attribute("An IP address as text, or C{None}.")
    expires = Attribute("POSIX time, a float or C{None}.")


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
