"""
Tests for L{socksrelay.splicing.PipePool}: pipes lent to spliced directions
only while they hold bytes.
"""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from socksrelay.splicing import PipePool


def isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class PipePoolTests(SynchronousTestCase):
    """
    L{PipePool}.
    """

    if not sys.platform.startswith("linux"):
        skip = "pipe sizes are a Linux matter"

    def test_lentPipeIsReused(self) -> None:
        """
        A pipe given back while a splicer lives is the next one taken: no
        new pipe is made for each chunk.  It is non-blocking.
        """
        pool = PipePool()
        pool.enter()
        r, w = pool.take()
        pool.give(r, w)
        self.assertEqual(pool.take(), (r, w))
        self.assertTrue(os.get_blocking(r) is False and os.get_blocking(w) is False)
        pool.give(r, w)
        pool.leave()

    def test_keepsAtMostKeep(self) -> None:
        """
        Beyond L{PipePool.keep} idle pipes, a pipe given back is closed.
        """
        pool = PipePool()
        pool.keep = 2
        pool.enter()
        pipes = [pool.take() for _ in range(3)]
        for r, w in pipes:
            pool.give(r, w)
        self.assertEqual(pool.idle, pipes[:2])
        self.assertFalse(isOpen(pipes[2][0]) or isOpen(pipes[2][1]))
        pool.leave()

    def test_lastLeaveClosesIdlePipes(self) -> None:
        """
        When the last splicer ends, the idle pipes are closed: no
        descriptor outlives the relays, and a pipe given back with no
        splicer alive is closed at once.
        """
        pool = PipePool()
        pool.enter()
        pool.enter()
        r, w = pool.take()
        pool.give(r, w)
        pool.leave()
        self.assertTrue(isOpen(r))
        pool.leave()
        self.assertEqual(pool.idle, [])
        self.assertFalse(isOpen(r) or isOpen(w))
        r2, w2 = pool.take()
        pool.give(r2, w2)
        self.assertFalse(isOpen(r2) or isOpen(w2))
