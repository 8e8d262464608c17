"""
The C{twistd socks5} plugin.  Nothing but a L{ServiceMaker}: the code lives in
L{socksrelay.tap} and is imported only when the plugin is used.
"""

from twisted.application.service import ServiceMaker

socksRelay = ServiceMaker(
    "socksrelay",
    "socksrelay.tap",
    "A SOCKS5 proxy server (RFC 1928, RFC 1929).",
    "socks5",
)
