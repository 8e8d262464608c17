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


class IControlSource(Interface):
    """
    What the metrics and control site (L{socksrelay.control}) shows and acts
    on: the sessions and metrics of this process
    (L{socksrelay.control.LocalSource}), or those of every worker of a
    supervisor (L{socksrelay.workers.WorkerSource}).  Every method returns a
    L{twisted.internet.defer.Deferred}; one that fails with
    L{socksrelay.control.SourceUnavailable} is answered with 503.
    """

    def metricsText():
        """
        Fires with the Prometheus text exposition (bytes) for C{/metrics}.
        """

    def sessions(user, client, destination):
        """
        Fires with the live sessions as JSON objects (dicts, see
        L{socksrelay.control.describeSession}) in id order: those of C{user}
        (exactly) whose client and destination contain C{client} and
        C{destination}; C{None} matches every session.
        """

    def session(sessionId):
        """
        Fires with the JSON object of the live session C{sessionId}, or
        C{None}.
        """

    def close(sessionId, requester):
        """
        Close the live session C{sessionId} because C{requester} (an address,
        as text) asked; fires with whether there was such a session.
        """

    def closeUser(user, requester):
        """
        Close every live session of C{user} because C{requester} asked; fires
        with the list of the closed sessions' ids.
        """
