"""The error every video reader raises for a file it cannot turn into frames."""
from __future__ import annotations

import os


class VideoDecodeError(RuntimeError):
    """A video file could not be read: ``path`` and a human ``cause`` are kept and both in the message."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot decode video {self.path!r}: {cause}")

    def __reduce__(self):
        # DataLoader workers pickle exceptions back to the main process; keep (path, cause) intact.
        return (type(self), (self.path, self.cause))
