"""The one exception type for mistakes a user can make and fix.

Everything a user controls (study files, data folders, images, CLI flags, architecture configs) is
validated at the boundary and reported as a `UserError` whose message names the thing that is wrong
and how to fix it. Entry points print the message without a traceback. It lives in `search_space`
because that is the lowest layer every other package may import.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A problem in user-supplied input, with a message that says what to change."""
