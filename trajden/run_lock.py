"""The run lock of a store: one run at a time writes it, and a lock left by a dead process is taken over.

The lock is a directory ``.trajden_lock`` inside the store holding a ``zarr.json`` (so zarr/xarray see an
empty group, not a stray file) whose attributes name the holder's pid, host, start time and a token. It is
created by an atomic directory rename; takeovers of stale locks (a dead pid on this host) are serialised with
``flock`` on the store directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

from trajden import names
from trajden.errors import StoreError

try:  # fcntl is POSIX-only; without it stale-lock takeovers are simply not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLock", "StaleLockWarning"]

_ZARR_JSON = "zarr.json"
_LOCK_INFO = "trajden_lock"  # key of the holder info inside the lock group's attributes


class StaleLockWarning(UserWarning):
    """A run lock left behind by a dead process was taken over."""


def _read_zarr_json(path: Path) -> dict | None:
    try:
        with open(path / _ZARR_JSON, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


_HELD_TOKENS: set[str] = set()  # tokens of locks held by this process
_HELD_GUARD = threading.Lock()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _read_lock(lock_dir: Path) -> dict | None:
    """Holder info of the lock at ``lock_dir``, None if there is no lock; {} if it is unreadable."""
    if not lock_dir.exists():
        return None
    meta = _read_zarr_json(lock_dir)
    if meta is None:
        return {}
    info = (meta.get("attributes") or {}).get(_LOCK_INFO)
    return info if isinstance(info, dict) else {}


def _lock_is_stale(info: dict) -> bool:
    if info.get("host") != socket.gethostname():
        return False  # cannot check a process on another host
    try:
        pid = int(info.get("pid"))
    except (TypeError, ValueError):
        return False
    if pid == os.getpid():
        with _HELD_GUARD:
            return info.get("token") not in _HELD_TOKENS  # an earlier process with our (reused) pid
    return not _pid_alive(pid)


def _lock_message(path: Path, info: dict) -> str:
    if not info:
        return f"{path} is locked (unreadable lock {path / names.STORE_LOCK})"
    since = info.get("since", "?")
    return (f"{path} is locked by pid {info.get('pid', '?')} on host {info.get('host', '?')} since {since}"
            f" (if that run is gone, delete {path / names.STORE_LOCK})")


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """Exclusive flock on directory ``path`` (serialises same-host takeovers); no-op where unsupported."""
    fd = None
    try:
        if fcntl is not None:
            try:
                fd = os.open(path, os.O_RDONLY)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                if fd is not None:
                    os.close(fd)
                fd = None
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _remove_dir_atomically(target: Path) -> bool:
    trash = target.with_name(f"{target.name}.removed-{uuid.uuid4().hex}")
    try:
        os.rename(target, trash)
    except FileNotFoundError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


class RunLock:
    """Exclusive run lock on a store; use as a context manager (``with store.lock(): ...``)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock_dir = path / names.STORE_LOCK
        self.token: str | None = None

    @property
    def held(self) -> bool:
        return self.token is not None

    def acquire(self) -> RunLock:
        if self.token is not None:
            raise StoreError(f"{self.path}: this lock object is already held")
        from trajden.store import is_trajden_store

        if not is_trajden_store(self.path):
            raise StoreError(f"{self.path} is not a trajden store; cannot lock it")
        token = uuid.uuid4().hex
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "token": token,
        }
        meta = {"zarr_format": 3, "node_type": "group", "attributes": {_LOCK_INFO: info}}
        with _flocked(self.path):
            for _attempt in range(20):
                holder = _read_lock(self.lock_dir)
                if holder is not None:
                    if holder and _lock_is_stale(holder):
                        if _remove_dir_atomically(self.lock_dir):
                            warnings.warn(
                                f"{self.path}: taking over a stale run lock of pid {holder.get('pid')} on host "
                                f"{holder.get('host')} (since {holder.get('since')}); that process is gone",
                                StaleLockWarning,
                                stacklevel=3,
                            )
                        continue
                    if not holder:  # unreadable (or vanishing right now): look once more
                        time.sleep(0.05)
                        holder = _read_lock(self.lock_dir)
                        if holder is None:
                            continue
                    raise StoreError(_lock_message(self.path, holder), hint="wait for that run to end",
                                     retryable=True)
                tmp = self.path / f"{names.STORE_LOCK}.tmp-{token}"
                os.mkdir(tmp)
                with open(tmp / _ZARR_JSON, "w", encoding="utf-8") as fh:
                    json.dump(meta, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.rename(tmp, self.lock_dir)  # fails if lock_dir exists (non-empty)
                except OSError:
                    shutil.rmtree(tmp, ignore_errors=True)
                    continue
                with _HELD_GUARD:
                    _HELD_TOKENS.add(token)
                self.token = token
                return self
        raise StoreError(f"{self.path}: could not acquire the run lock {self.lock_dir}")

    def release(self) -> None:
        token, self.token = self.token, None
        if token is None:
            return
        with _HELD_GUARD:
            _HELD_TOKENS.discard(token)
        holder = _read_lock(self.lock_dir)
        if holder and holder.get("token") == token:
            _remove_dir_atomically(self.lock_dir)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
