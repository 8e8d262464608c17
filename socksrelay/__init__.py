"""
socksrelay: a SOCKS proxy server built on Twisted.

Run it with C{twistd -n socks5}, or build L{socksrelay.server.SOCKS5ServerFactory}
in code and add it to your own service tree.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
