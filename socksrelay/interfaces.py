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
