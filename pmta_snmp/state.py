"""Small JSON state store for the check_pmta_* plugins.

Plugins keep seek positions and per-minute counters between runs. A run may be killed at any
moment and two runs (a manual one and the scheduler's) may overlap, so a save is atomic
(temp file in the same directory, fsync, rename, fsync of the directory) and a read-modify-write
holds an flock on a sidecar ``.lock`` file with a bounded wait. A corrupt state file is reported
through :attr:`StateFile.warning` and reset; it never crashes a plugin.

Plugins often run as root, so the state directory must not let another local user steer their
writes: a directory writable by group or others is refused unless it is sticky and owned by us
or root (like /tmp), every state path is opened relative to the checked directory with
``O_NOFOLLOW`` (a planted symlink is refused, never followed), and in a shared sticky directory
a file owned by someone else is refused too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SYSTEM_STATE_DIR",
    "StateCorrupt",
    "StateError",
    "StateFile",
    "StateLockTimeout",
    "StateUnsafe",
    "check_state_dir",
    "default_state_dir",
    "state_path",
]

#: Shared state directory used when this process may write there (packages create it).
SYSTEM_STATE_DIR = Path("/var/lib/pmta-snmp")

#: Environment variable that overrides the state directory (tests, non-standard installs).
STATE_DIR_ENV = "PMTA_SNMP_STATE_DIR"

_LOCK_POLL_S = 0.02

#: Open flags shared by every state path: never follow a symlink, never leak the descriptor.
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class StateError(Exception):
    """A state file could not be read, locked or written."""


class StateLockTimeout(StateError):
    """Another process held the state lock for longer than the allowed wait."""


class StateCorrupt(StateError, UserWarning):
    """The state file held no valid JSON object; it was moved aside and the state reset."""


class StateUnsafe(StateError):
    """The state directory or a state path could let another user steer our writes."""


def check_state_dir(st: os.stat_result, directory: os.PathLike[str] | str) -> bool:
    """Raise StateUnsafe when a directory with status `st` lets others plant files in it;
    True when it is shared but safe (sticky and owned by us or root, like /tmp)."""
    if not stat.S_ISDIR(st.st_mode):
        raise StateUnsafe(f"state directory {directory} is not a directory")
    if not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    if st.st_mode & stat.S_ISVTX and st.st_uid in (os.geteuid(), 0):
        return True
    who = "others" if st.st_mode & stat.S_IWOTH else "its group"
    raise StateUnsafe(
        f"state directory {directory} is writable by {who} (mode "
        f"{stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}): another user could plant "
        f"links there; refused (chmod go-w {directory}, or use a private --state-dir)"
    )


def default_state_dir() -> Path:
    """Return where plugin state lives: ``$PMTA_SNMP_STATE_DIR``, ``/var/lib/pmta-snmp`` when
    writable, else ``$XDG_STATE_HOME/pmta-snmp`` or ``~/.local/state/pmta-snmp``."""
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override)
    if _writable_dir(SYSTEM_STATE_DIR):
        return SYSTEM_STATE_DIR
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative value must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "pmta-snmp"


def _writable_dir(path: Path) -> bool:
    """True if ``path`` is a writable directory, or could be created by this process."""
    if path.is_dir():
        return os.access(path, os.W_OK | os.X_OK)
    if path.exists():
        return False
    parent = path.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def state_path(plugin: str, *keys: str, directory: Path | None = None) -> Path:
    """A state file path for ``plugin`` and the things it watches (e.g. a log path).

    The keys are hashed so any path or URL gives a short, safe file name, and two plugin
    instances watching different files never share state.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", plugin).strip("._") or "state"
    name = safe
    if keys:
        digest = hashlib.sha256("\0".join(keys).encode("utf-8", "surrogateescape")).hexdigest()
        name = f"{safe}-{digest[:16]}"
    return (directory or default_state_dir()) / f"{name}.json"


#: A state file's temporary file (`.NAME.XXXXXXXX.tmp`, written, then renamed over NAME)
#: still there this long after its last write is a leftover of a run killed mid-save.
STALE_TEMP_S = 10.0


def remove_stale_temp_files(path: os.PathLike[str], *, older_than: float = STALE_TEMP_S,
                            dir_fd: int | None = None) -> list[str]:
    """Remove the temporary files of `path`'s writers not modified for `older_than` seconds;
    the names removed. With `dir_fd`, `path`'s directory is that open directory.

    Call it holding the state file's lock: every writer holds it while its temporary file
    exists, so one found then belongs to a writer that died. The age is a second guard (a
    writer outside the lock, a clock step); a dead writer's file is removed a run later."""
    directory, name = os.path.split(os.fspath(path))
    prefix = f".{name}."
    cutoff = time.time() - older_than
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory or ".") if dir_fd is None else os.scandir(dir_fd))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
            st = os.stat(entry.name if dir_fd is not None else entry.path, dir_fd=dir_fd,
                         follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.unlink(entry.name if dir_fd is not None else entry.path, dir_fd=dir_fd)
                removed.append(entry.name)
    return removed


class StateFile:
    """One JSON object on disk, read and written atomically under an advisory lock.

    ``load()``/``save()`` each take the lock on their own; ``transaction()`` holds it across a
    load-modify-save so concurrent runs never lose each other's updates. While the lock is
    held the checked state directory stays open and every path is opened relative to it.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        #: Set by :meth:`load` when the file was corrupt and has been reset; callers show it.
        self.warning: StateCorrupt | None = None
        self._lock_fd: int | None = None
        self._dir_fd: int | None = None
        self._shared_dir = False
        self._lock_depth = 0

    def __repr__(self) -> str:
        return f"StateFile({str(self.path)!r})"

    # -- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the exclusive lock (re-entrant within this object); wait at most lock_timeout."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        dir_fd = self._open_dir()
        try:
            try:
                fd = self._open_in_dir(dir_fd, self.lock_path.name, os.O_RDWR | os.O_CREAT,
                                       "lock file", self.lock_path)
            except StateError:
                raise
            except OSError as exc:  # a read-only directory: say which one
                raise StateError(
                    f"cannot create the lock file {self.lock_path}: {exc.strerror} (is the "
                    f"state directory {self.lock_path.parent} writable?)"
                ) from exc
            try:
                self._acquire(fd)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(dir_fd)
            raise
        self._lock_fd, self._dir_fd, self._lock_depth = fd, dir_fd, 1
        try:
            yield
        finally:
            self._lock_fd, self._dir_fd, self._lock_depth = None, None, 0
            # Closing the descriptor releases the flock.
            os.close(fd)
            os.close(dir_fd)

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + max(0.0, self.lock_timeout)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise StateError(f"cannot lock {self.lock_path}: {exc.strerror}") from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StateLockTimeout(
                    f"state file {self.path} is locked by another process "
                    f"(waited {self.lock_timeout:g}s for {self.lock_path})"
                )
            time.sleep(min(_LOCK_POLL_S, remaining))

    # -- paths -----------------------------------------------------------------------------

    def _open_dir(self) -> int:
        """The state directory, created private if missing, opened and checked (the checks
        are on the open descriptor, so a directory swapped in afterwards is not the one used)."""
        directory = self.path.parent
        if not directory.is_dir():
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                # mkdir's mode is filtered by the umask; state may hold addresses, keep it private.
                os.chmod(directory, 0o700)
            except OSError as exc:
                raise StateError(
                    f"cannot create state directory {directory}: {exc.strerror}"
                ) from exc
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StateError(f"cannot open state directory {directory}: {exc.strerror}") from exc
        try:
            self._shared_dir = check_state_dir(os.fstat(fd), directory)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_in_dir(self, dir_fd: int, name: str, flags: int, what: str, shown: Path,
                     mode: int = 0o600) -> int:
        """Open `name` in the state directory without following a symlink; in a shared
        (sticky) directory the file must be ours."""
        try:
            fd = os.open(name, flags | _NOFOLLOW, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateUnsafe(
                    f"{what} {shown} is a symbolic link; refused (state paths are never "
                    "followed through links: remove it)"
                ) from exc
            raise
        if self._shared_dir:
            owner = os.fstat(fd).st_uid
            if owner != os.geteuid():
                os.close(fd)
                raise StateUnsafe(
                    f"{what} {shown} in the shared directory {shown.parent} belongs to uid "
                    f"{owner}, not to us; refused (remove it, or use a private --state-dir)"
                )
        return fd

    # -- reading and writing ---------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """Return the stored object, ``{}`` when there is none; a corrupt file is reset."""
        with self.lock():
            return self._load_locked()

    def save(self, data: Mapping[str, Any]) -> None:
        """Replace the stored object atomically (mode 0600)."""
        with self.lock():
            self._save_locked(data)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Lock, load, yield the dict for in-place changes, then save it (not on an exception)."""
        with self.lock():
            data = self._load_locked()
            yield data
            self._save_locked(data)

    def _held_dir(self) -> int:
        assert self._dir_fd is not None, "call with the lock held"
        return self._dir_fd

    def _load_locked(self) -> dict[str, Any]:
        self.warning = None
        try:
            fd = self._open_in_dir(self._held_dir(), self.path.name, os.O_RDONLY, "state file",
                                   self.path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"cannot read state file {self.path}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise StateError(f"cannot read state file {self.path}: {exc.strerror}") from exc
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._reset_corrupt(f"not valid JSON ({exc})")
        if not isinstance(data, dict):
            return self._reset_corrupt(f"holds a JSON {type(data).__name__}, not an object")
        return data

    def _reset_corrupt(self, why: str) -> dict[str, Any]:
        aside = self.path.with_name(self.path.name + ".corrupt")
        dir_fd = self._held_dir()
        try:
            # rename moves a link itself, never its target
            os.replace(self.path.name, aside.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place"
        self.warning = StateCorrupt(f"state file {self.path} {why}; state reset, {where}")
        return {}

    def _save_locked(self, data: Mapping[str, Any]) -> None:
        payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
        dir_fd = self._held_dir()
        # left by writers killed mid-save (kill -9, OOM)
        remove_stale_temp_files(self.path, dir_fd=dir_fd)
        tmp = f".{self.path.name}.{secrets.token_hex(4)}.tmp"
        try:
            # O_EXCL: a new file of ours, never an existing one or a link's target.
            fd = self._open_in_dir(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                   "temporary file", self.path.with_name(tmp))
        except OSError as exc:
            raise StateError(f"cannot write state file {self.path}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
                os.fchmod(fh.fileno(), 0o600)
            os.replace(tmp, self.path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            if isinstance(exc, OSError):
                raise StateError(f"cannot write state file {self.path}: {exc}") from exc
            raise
        # Make the rename durable; some filesystems refuse fsync on a directory, which is fine.
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
