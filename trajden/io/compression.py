"""Compressed text inputs: gzip, bz2 and xz, recognised by their magic bytes (not by the file name)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib

__all__ = ["DECOMPRESS_ERRORS", "SUFFIXES", "compression", "open_binary", "strip_suffix"]

#: magic bytes -> compression name
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
#: file name suffixes of compressed files (stripped to find the format from the name)
SUFFIXES = (".gz", ".bz2", ".xz")
#: what reading a damaged compressed file can raise (besides OSError, which bz2/gzip raise on bad data)
DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def compression(path: str | os.PathLike) -> str | None:
    """``"gzip"``, ``"bz2"``, ``"xz"`` or None (plain), from the first bytes of ``path``."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def open_binary(path: str | os.PathLike, kind: str | bool | None):
    """Open ``path`` for binary reading, decompressing ``kind`` (True means gzip, for older indexes)."""
    if kind is True or kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    return open(path, "rb", buffering=0)


def strip_suffix(path: str) -> str:
    """``path`` without a compression suffix (``traj.dump.bz2`` -> ``traj.dump``)."""
    low = path.lower()
    for s in SUFFIXES:
        if low.endswith(s):
            return path[: -len(s)]
    return path
