# -*- test-case-name: tests.test_reload -*-
"""
Taking a POSIX signal for a service, and giving it back.
"""

from __future__ import annotations

import signal
from typing import Any, Callable


class SignalHandler:
    """
    Installs C{handler} for the signal called C{name} (where the platform
    has it) and restores what was there before: the previous Python
    handler, or the default action when the previous one was not set from
    Python.
    """

    def __init__(self, name: str, handler: Callable[[int, Any], None]) -> None:
        self._signum = getattr(signal, name, None)
        self._handler = handler
        self._previous: Any = None
        self.installed = False

    def install(self) -> None:
        """
        Take the signal (again, if another handler took it meanwhile).
        """
        if self._signum is None:
            return
        if not self.installed:
            self._previous = signal.signal(self._signum, self._handler)
            self.installed = True
        elif signal.getsignal(self._signum) is not self._handler:
            signal.signal(self._signum, self._handler)

    def restore(self) -> None:
        """
        Give the signal back.
        """
        if not self.installed:
            return
        previous = self._previous
        signal.signal(self._signum, signal.SIG_DFL if previous is None else previous)
        self.installed = False
        self._previous = None
