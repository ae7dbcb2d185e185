"""Atomic file writes, used by every file adamkit writes (checkpoints, reports, benchmark results).

A reader (or a crash, or Ctrl-C) sees the old file or the new one, never a part of one: the content is
written to a temporary file in the same directory, flushed to disk, and renamed over the target
(``os.replace`` is atomic on POSIX and Windows when both names are on one file system).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Callable


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[IO[bytes]], object]) -> Path:
    """Write ``content`` (text as UTF-8, bytes, or a function that writes to a binary file object) to
    ``path`` atomically; return the path. The directory must exist; on any error the target is left as
    it was and the temporary file is removed."""
    path = Path(path)
    # a fresh name opened with "x" (not mkstemp, whose files are private): the file gets the usual
    # permissions of a new file, as if written directly
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
