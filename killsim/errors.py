"""The simulator's own exceptions: it shares no code with killsync, errors included.

::

    SimError                 base of what the simulator reports to its caller
    ├── ScenarioError        a bad scenario value: unknown name, key, type, limit
    ├── ScenarioFileError    a scenario file that cannot be read or holds a bad value
    └── ListenError          the server cannot bind its address

Messages are one line naming the problem (the key, the file, the address). Whoever
embeds the simulator decides what they mean to a user: ``killsync sim serve`` and
``killsync demo`` turn them into killsync's usage and input errors (exit code 2).
"""

from __future__ import annotations


class SimError(Exception):
    """Base of the simulator's errors; ``str(exc)`` is the one-line message."""


class ScenarioError(SimError):
    """A scenario value the simulator cannot run with; the message names the key."""


class ScenarioFileError(SimError):
    """A scenario file that is missing, unreadable, not TOML or has a bad value."""


class ListenError(SimError):
    """The server's address cannot be bound (port in use, no permission)."""
