"""Errors raised by the curriculum package.

Both are `dataio.errors.UserError`s with one-line messages, so the command line turns them into exit code 2
as it does every other error a user can fix. A damaged triplet folder is the contract's own
`dataio.errors.TripletDataError`.
"""

from __future__ import annotations

from dataio.errors import UserError


class CurriculumError(UserError):
    """Base class: a one-line message that says what is wrong and where."""


class ConfigError(CurriculumError):
    """A curriculum setting is invalid; the message names the key (`curriculum.pacing: ...`)."""


class StateError(CurriculumError):
    """A saved curriculum state does not fit the run it is restored into."""
