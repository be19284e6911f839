"""The error every video reader raises for a clip it cannot turn into frames, and its window subclass.

``reason`` is a short fixed word (``REASONS``) the datasets count skipped clips by; ``cause`` is the
human detail.
"""
from __future__ import annotations

import os

REASONS = ("missing", "empty", "not_video", "truncated", "no_video_stream", "undecodable", "bad_window")


class VideoDecodeError(RuntimeError):
    """A video file could not be read: ``path``, a human ``cause`` and a ``reason`` (one of ``REASONS``) are
    kept; path and cause are both in the message."""

    def __init__(self, path: str | os.PathLike, cause: str, reason: str = "undecodable"):
        if reason not in REASONS:
            raise ValueError(f"unknown VideoDecodeError reason {reason!r}; expected one of {REASONS}")
        self.path = str(path)
        self.cause = cause
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!r}: {cause}")

    def __reduce__(self):
        # DataLoader workers pickle exceptions back to the main process; keep (path, cause, reason) intact.
        return (type(self), (self.path, self.cause, self.reason))


class BadWindowError(VideoDecodeError, ValueError):
    """A clip window that holds nothing of the file (starts at or past its end, zero-length, negative): the
    file may be fine, the record is not. Also a ``ValueError``, which such windows raised before."""

    def __init__(self, path: str | os.PathLike, cause: str, reason: str = "bad_window"):
        super().__init__(path, cause, reason)
