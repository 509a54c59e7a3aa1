"""Errors that the command line reports as one line instead of a traceback.

Raise :class:`UsageError` where a user's input (a flag, a config key, a path, a file they wrote) is wrong
and the message says how to fix it. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user: ``agentgym`` prints ``agentgym: error: <message>`` and exits with status 2.

    A subclass of ``ValueError`` so that library callers who already catch ``ValueError`` keep working.
    """
