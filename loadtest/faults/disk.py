"""A full disk under the ledger (native mode, root): a small tmpfs bind-mounted over the stack's data dir.

The ledger is copied in first, so it goes on counting where it was; the mail sink's store (data/mail) is
bound back from the real disk, so only the ledger (and the carts) see the full disk. On the way out the
ledger, with whatever it recorded meanwhile, is copied back and every mount is undone, also after an error.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from contextlib import closing, suppress
from pathlib import Path

LEDGER = "ledger.sqlite3"
MIB = 1024 * 1024


class DiskError(RuntimeError):
    """The full disk could not be set up (the row is skipped)."""


class TeardownError(DiskError):
    """The full disk could not be taken away cleanly (the row fails: the stack may need `make down`)."""


def holders(path: Path) -> list[str]:
    """Processes with a file open under ``path`` (what keeps a umount busy): 'pid (name)'."""
    out = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd).startswith(f"{path}/") for fd in fd_dir.iterdir()):
                pid = fd_dir.parent.name
                out.append(f"{pid} ({(fd_dir.parent / 'comm').read_text().strip()})")
        except OSError:
            continue
    return out


def checkpoint(db: Path) -> None:
    """Fold the WAL into the database file, so the file alone is the whole ledger."""
    if db.exists():
        with closing(sqlite3.connect(db, timeout=30, isolation_level=None)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _run(*argv: str) -> None:
    out = subprocess.run(list(argv), capture_output=True, text=True)
    if out.returncode:
        raise DiskError(f"`{' '.join(argv)}` failed: {(out.stderr or out.stdout).strip()}")


class SmallDisk:
    """``with SmallDisk(data_dir) as disk: disk.fill(); ...; disk.free()``."""

    def __init__(self, data_dir: Path, headroom_mb: int = 2) -> None:
        self.data = data_dir
        self.headroom_mb = headroom_mb
        self.mounts: list[Path] = []
        self.work: Path | None = None
        self.filler: Path | None = None
        self.size_mb = 0

    def __enter__(self) -> SmallDisk:
        if os.geteuid() != 0:
            raise DiskError("needs root (mount)")
        try:
            self._mount()
        except BaseException:
            self._unmount()
            raise
        return self

    def _mount(self) -> None:
        checkpoint(self.data / LEDGER)
        self.work = Path(tempfile.mkdtemp(prefix="faults-disk-"))
        orig = self.work / "orig"
        orig.mkdir()
        _run("mount", "--bind", str(self.data), str(orig))  # the real dir stays reachable under the tmpfs
        self.mounts.append(orig)
        used = sum(f.stat().st_size for f in orig.glob(f"{LEDGER}*"))
        self.size_mb = used // MIB + self.headroom_mb
        st = orig.stat()
        _run("mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode={st.st_mode & 0o7777:o},uid={st.st_uid},"
             f"gid={st.st_gid}", "faults-full-disk", str(self.data))
        self.mounts.append(self.data)
        for f in orig.glob(f"{LEDGER}*"):
            shutil.copy2(f, self.data / f.name)
            os.chown(self.data / f.name, f.stat().st_uid, f.stat().st_gid)
        if (orig / "mail").is_dir():
            (self.data / "mail").mkdir()
            _run("mount", "--bind", str(orig / "mail"), str(self.data / "mail"))
            self.mounts.append(self.data / "mail")

    def fill(self) -> int:
        """Write a file until the tmpfs has no byte left; returns its size."""
        self.filler = self.data / "faults-filler"
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        written = 0
        try:
            for chunk in (MIB, 4096, 512):
                block = b"\0" * chunk
                try:
                    while True:
                        written += os.write(fd, block)
                except OSError:
                    pass  # ENOSPC: on to a smaller block for the last pages
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)
            self.filler = None

    def __exit__(self, *exc: object) -> None:
        self._unmount()

    def _unmount(self) -> None:
        self.free()
        errors: list[str] = []
        if self.work is not None and self.data in self.mounts:
            orig = self.work / "orig"
            try:
                checkpoint(self.data / LEDGER)
                for f in orig.glob(f"{LEDGER}-*"):
                    f.unlink()  # stale next to the checkpointed copy coming back
                shutil.copy2(self.data / LEDGER, orig / LEDGER)
            except (OSError, sqlite3.Error) as e:
                errors.append(f"copying the ledger back from the tmpfs: {e}")
        for mount in reversed(self.mounts):
            out = subprocess.run(["umount", str(mount)], capture_output=True, text=True)
            if out.returncode:
                busy = holders(mount)
                lazy = subprocess.run(["umount", "-l", str(mount)], capture_output=True, text=True)
                errors.append(f"umount {mount}: {out.stderr.strip()} (open files held by {', '.join(busy) or '?'}); "
                              f"{lazy.stderr.strip() or 'lazily unmounted'}")
        self.mounts.clear()
        if self.work is not None and not errors:
            # rmdir, never rmtree: through a bind mount left behind, that would delete the real data dir
            for d in (self.work / "orig", self.work):
                with suppress(OSError):
                    d.rmdir()
            self.work = None
        if errors:
            raise TeardownError("; ".join(errors))
