"""The domain errors every layer raises, defined once; ``service.errors`` alone maps them to HTTP.

- ``NotFoundError``: an id that names nothing (no such dataset, job, model version).
- ``ConflictError``: the request conflicts with the state of what is stored; ``CorruptError``, its
  kind for a stored file that exists but cannot be read (a hand-edited or damaged manifest).
- ``Refused``: the request or upload is refused, with the reason for the client (bad or hostile
  content, nothing usable in an upload); ``TooLarge``, its kind for anything over a limit (upload
  bytes, archive members, unpacked bytes, image pixels, DICOM frames).

``str(error)`` (and ``error.detail``) is the sentence a client reads. Torch-free.
"""

from __future__ import annotations


class DrawaiError(Exception):
    """Base of the domain errors; ``detail`` is the sentence for the client."""

    @property
    def detail(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFoundError(DrawaiError, KeyError):
    """An id that names nothing in the store."""

    def __str__(self) -> str:  # KeyError would quote it
        return self.detail


class ConflictError(DrawaiError):
    """The request conflicts with the current state (in use, already ended)."""


class CorruptError(ConflictError, ValueError):
    """A stored file that exists but cannot be read (a hand-edited or damaged manifest)."""


class Refused(DrawaiError):
    """The request or the whole upload is refused; the message says why."""


class TooLarge(Refused):
    """Over a limit (upload bytes, archive members, unpacked bytes, image pixels, DICOM frames)."""
