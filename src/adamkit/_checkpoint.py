"""Atomic ``.npz`` files holding arrays plus a JSON description, and checks on reading them back.

Optimizer state and ``fit`` checkpoints go through :func:`save_npz`: the data is written atomically
(``_files.write_atomic``: a temporary file in the same directory, flushed to disk, then renamed over
the target), so a crash leaves either the old file or the new one, never half of one.
:func:`load_npz` turns a truncated or corrupted file into one clear ``ValueError``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_atomic

_META_KEY = "__adamkit_meta__"


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` and the JSON-able ``meta`` to ``path`` atomically; return the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path={str(path)!r}: expected a file name ending in '.npz'")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ValueError(f"path={str(path)!r}: directory {str(directory)!r} does not exist")
    payload = dict(arrays)
    payload[_META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **payload))
    return path


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_npz`: ``(arrays, meta)``, all loaded into memory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError) as exc:
        # (zipfile raises NotImplementedError for a corrupted version or compression field)
        # numpy's message for pickled data suggests loading it unsafely: adamkit never writes pickles
        why = "it holds pickled Python objects, which adamkit never writes" if "pickle" in str(exc) else str(exc)
        raise ValueError(f"checkpoint {str(path)!r} is truncated or corrupted and was not loaded ({why})") from None
    raw = arrays.pop(_META_KEY, None)
    if raw is None:
        raise ValueError(f"checkpoint {str(path)!r} is not an adamkit file (no description inside); not loaded")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {str(path)!r} has a corrupted description and was not loaded ({exc})") from None
    return arrays, meta
