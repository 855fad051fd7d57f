"""The one family of user-facing errors: a bad value, file or setting, never a bug.

Every error the library raises for a user's mistake derives from ``AmedError``; the ``amed`` command
prints those as one line and exits 2. Any other exception is a bug and keeps its traceback. Each
subclass also derives from the built-in it replaces, so ``except ValueError`` (or FileNotFoundError,
TypeError, ...) written against earlier versions keeps working.
"""

from __future__ import annotations

import pickle

__all__ = ["AmedError", "AmedValueError", "AmedTypeError", "AmedFileNotFoundError", "AmedOSError",
           "MissingDependency", "RefusedPickle", "Diverged", "DeviceUnavailable"]


class AmedError(Exception):
    """Base of every user-facing error (the CLI: one line on stderr, exit status 2)."""


class AmedValueError(AmedError, ValueError):
    """A bad value: a setting, a file's contents, an input array."""


class AmedTypeError(AmedError, TypeError):
    """A call with arguments the function does not take (e.g. a misspelt keyword)."""


class AmedFileNotFoundError(AmedError, FileNotFoundError):
    """A file or folder the user named is missing."""


class AmedOSError(AmedError, OSError):
    """A file or model that cannot be read or loaded."""


class MissingDependency(AmedError, ImportError):
    """An optional dependency (diffusers, clean-fid, ...) is not installed or fails to import."""


class RefusedPickle(AmedError, pickle.UnpicklingError):
    """A checkpoint pickle that references something the restricted unpickler does not allow."""


class Diverged(AmedError, FloatingPointError):
    """A solver run whose state stopped being finite."""


class DeviceUnavailable(AmedError, RuntimeError):
    """A device that this machine does not have (e.g. ``cuda`` without a GPU)."""
