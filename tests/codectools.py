"""
Tests shared by the single-request codecs (L{socksrelay.wire.SingleRequestCodec}
subclasses): the plumbing of L{leftover}, L{buffered} and C{state}.
"""

from socksrelay.wire import NEED_DATA


class SingleRequestCodecTestsMixin:
    """
    Mix into a C{SynchronousTestCase} and set:

    @ivar codecFactory: makes a fresh codec.
    @ivar message: one whole request.
    @ivar requestState: the codec's C{state} before the request is in.
    """

    codecFactory = None
    message = b""
    requestState = ""

    def test_leftoverForgets(self):
        """leftover() returns bytes once, then only bytes received since."""
        conn = self.codecFactory()
        conn.receiveData(self.message + b"one")
        conn.nextEvent()
        self.assertEqual(conn.leftover(), b"one")
        conn.receiveData(b"two")
        self.assertEqual(conn.leftover(), b"two")

    def test_leftoverBeforeRequest(self):
        """leftover() before a request was parsed raises RuntimeError."""
        conn = self.codecFactory()
        self.assertRaises(RuntimeError, conn.leftover)
        conn.receiveData(self.message[:-1])
        self.assertIs(conn.nextEvent(), NEED_DATA)
        self.assertRaises(RuntimeError, conn.leftover)

    def test_stateAndBuffered(self):
        """state names the phase and buffered counts the bytes not handed out."""
        conn = self.codecFactory()
        self.assertEqual((conn.state, conn.buffered), (self.requestState, 0))
        conn.receiveData(self.message + b"xyz")
        self.assertEqual(conn.buffered, len(self.message) + 3)
        conn.nextEvent()
        self.assertEqual((conn.state, conn.buffered), ("done", 3))
        conn.leftover()
        self.assertEqual(conn.buffered, 0)
