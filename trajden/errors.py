"""trajden's error hierarchy: the problems trajden knows about, reported as one line by the command line.

Everything raised as a :class:`TrajdenError` is a known problem with what the user gave (an input file, an
option, a model file, an output store, a cluster set-up); the ``trajden`` command prints it as one line and
exits non-zero. Any other exception is a bug and keeps its traceback.

The subclasses also derive from ``ValueError``, so code written against the older ``ValueError``-based
errors keeps working.
"""

from __future__ import annotations

__all__ = [
    "ClusterError", "InputError", "ModelError", "StoreError", "StoreVariableError", "TrajdenError", "TrajectoryError",
]


class TrajdenError(Exception):
    """A known problem, described in one line (file, frame, line number where they apply).

    Parameters
    ----------
    message : str
        What is wrong, naming the file (and frame, line) where it applies. Newlines are folded.
    hint : str, optional
        What to do about it, in the command line's own terms (``--topology``, ``--overwrite``, ...).
    retryable : bool, optional
        True when running the same command again can succeed (a lock held by a live run, a lost worker);
        only then does the command line suggest re-running. Defaults to the class' :attr:`retryable`.
    """

    #: whether re-running the same command can succeed (class default)
    retryable = False

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool | None = None):
        message = " ".join(str(message).split("\n"))
        super().__init__(message)
        self.message = message
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:  # message and hint, unquoted also for subclasses of KeyError
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def one_line(self) -> str:
        """The message and, where there is one, the hint, as one line."""
        out = self.message or type(self).__name__
        if self.hint:
            out += f"; {self.hint}"
        if self.retryable:
            out += "; re-run the same command to retry"
        return " ".join(out.split())


class InputError(TrajdenError, ValueError):
    """An input trajectory, topology or option cannot be used as given."""


#: the readers' historical name for :class:`InputError`
TrajectoryError = InputError


class ModelError(TrajdenError, ValueError):
    """A model file that cannot be loaded, or a model that does not fit the input."""


class StoreError(TrajdenError, ValueError):
    """A problem with the output store (not a store, incompatible, locked, lacking a variable)."""


class StoreVariableError(StoreError, KeyError):
    """The store lacks a variable the request needs (e.g. raw positions of a run without ``--keep-raw``)."""


class ClusterError(TrajdenError, ValueError):
    """A cluster configuration or connection that cannot be used."""
