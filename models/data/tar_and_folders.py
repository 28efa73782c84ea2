"""Reading ``.tar`` archives (plain, gzip, bzip2, xz) and server-side folders with the rules of ``models.data.members``.

**Tar**: the archive is read forward only, as a stream, twice: the first pass lists and checks
every member (names, links, special files, counts, declared sizes; unknown suffixes sniffed) before
anything is decoded, as the zip directory check does; the second reads the kept members one at a
time, in archive order. ``tarfile`` reads through ``_Guarded``, which refuses any single read
over ``_MAX_READ`` (a hostile pax or long-name header would otherwise be read whole into memory)
and any position past the unpacked-bytes limit (a compression bomb), so memory and work stay
bounded whatever the headers declare. Symlink, hardlink and device members refuse the archive.

**Folders** (``POST /datasets/import``): walked in path order without following folder symlinks;
a file symlink is read only when it resolves inside the allowed root; hidden and system folders
are pruned and reported; FIFOs and other special files are skipped, never opened blocking.
Torch-free.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from models.data.members import (
    HEAD_BYTES,
    SYSTEM_FILES,
    Budget,
    Listing,
    Member,
    member_cap,
    read_capped,
    safe_name,
)
from models.platform.errors import Refused, TooLarge
from models.platform.settings import Settings

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
_MAX_READ = 4 << 20  # the largest single read tarfile may make: our own reads are 1 MiB chunks
_HEADER_ALLOWANCE = 8 << 10  # stream bytes allowed per member beyond its data (header, padding, pax)
_STREAM_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


class _Guarded(io.RawIOBase):
    """The decompressed tar stream, forward reads only in practice, with a size guard on every call."""

    def __init__(self, raw: io.BufferedIOBase | BinaryIO, limit: int) -> None:
        self._raw = raw
        self._pos = 0
        self._limit = limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _check(self, end: int) -> None:
        if end > self._limit:
            raise TooLarge(f"archive unpacks to more than the limit of {self._limit} bytes")

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > _MAX_READ:
            raise Refused("tar header larger than any real archive has")
        self._check(self._pos + size)
        data = self._raw.read(size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._pos + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < 0:
            raise io.UnsupportedOperation("only absolute or relative seeks in a tar stream")
        self._check(target)
        self._raw.seek(target)
        self._pos = target
        return target


def _decompressor(f: BinaryIO) -> io.BufferedIOBase | BinaryIO:
    """The tar stream inside ``f``: gunzipped, bunzipped, unxz'ed or as it is, told by magic bytes."""
    magic = f.read(6)
    f.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=f, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(f)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(f)
    return f


def _tar_members(path: Path, settings: Settings) -> Iterator[tuple[int, tarfile.TarFile, tarfile.TarInfo]]:
    """(index, archive, member) for every member, streaming; refuses what is not a readable tar (``Refused``)."""
    limit = settings.max_unpacked_bytes + settings.max_archive_members * _HEADER_ALLOWANCE + _MAX_READ
    with path.open("rb") as f:
        stream = _Guarded(_decompressor(f), limit)
        try:
            tf = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 (closed by the with below)
        except _STREAM_ERRORS:
            raise Refused("the upload is not a valid tar archive") from None
        with tf:
            index = 0
            while True:
                try:
                    info = tf.next()
                except _STREAM_ERRORS:
                    raise Refused("corrupt or truncated tar archive") from None
                if info is None:
                    return
                yield index, tf, info
                index += 1


def _check_tar_member(info: tarfile.TarInfo) -> None:
    safe_name(info.name)
    if info.issym():
        raise Refused(f"symbolic link in archive: {info.name!r}")
    if info.islnk():
        raise Refused(f"hard link in archive: {info.name!r}")
    if info.ischr() or info.isblk() or info.isfifo():
        raise Refused(f"special file (device or FIFO) in archive: {info.name!r}")


def _tar_read(tf: tarfile.TarFile, info: tarfile.TarInfo, n: int | None, budget: Budget, cap: int) -> bytes | None:
    """The member's first ``n`` bytes (``n`` None: all of it, or None past ``cap``)."""
    try:
        f = tf.extractfile(info)
        if f is None:
            return b""
        with f:
            return f.read(n) if n is not None else read_capped(f, budget, cap)
    except _STREAM_ERRORS:
        raise Refused(f"corrupt or truncated tar member {info.name!r}") from None


def _tar_head(tf: tarfile.TarFile, info: tarfile.TarInfo, budget: Budget) -> bytes:
    return _tar_read(tf, info, HEAD_BYTES, budget, HEAD_BYTES) or b""


def iter_tar(
    path: Path, settings: Settings, skipped: list[dict[str, str]], budget: Budget | None = None
) -> Iterator[Member]:
    """Yield the members of the tar at ``path`` to decode, in archive order; append junk to ``skipped``.

    The members' bytes are taken from ``budget`` (the upload's; default: one for this archive).
    """
    listing = Listing(settings, skipped)
    unused = Budget(settings.max_unpacked_bytes)
    for index, tf, info in _tar_members(path, settings):  # pass 1: check and list
        _check_tar_member(info)
        listing.count(info.size)
        if info.isreg():
            name = safe_name(info.name)
            listing.consider(name, info.size, index, partial(_tar_head, tf, info, unused))
        elif not info.isdir():
            skipped.append({"file": str(safe_name(info.name)), "reason": "not a regular file"})
    classes = listing.classes()
    wanted = {entry.ref: entry for entry in listing.entries}
    budget = budget or Budget(settings.max_unpacked_bytes)
    for index, tf, info in _tar_members(path, settings):  # pass 2: read what was kept
        entry = wanted.get(index)
        if entry is None:
            continue
        if safe_name(info.name) != entry.name:
            raise Refused("the archive changed while it was read")
        cap = member_cap(entry.kind, settings)
        data = _tar_read(tf, info, None, budget, cap)
        if data is None:
            skipped.append({"file": str(entry.name), "reason": f"too large (over {cap} bytes)"})
            continue
        yield Member(path=entry.name.as_posix(), class_name=classes[entry.name], data=data, kind=entry.kind)


# -- folders --------------------------------------------------------------------------------
def _open_regular(path: Path) -> IO[bytes] | None:
    """``path`` opened for reading when it is a regular file (FIFOs are never waited on), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _head(path: Path) -> bytes:
    f = _open_regular(path)
    if f is None:
        return b""
    with f:
        return f.read(HEAD_BYTES)


def _walk(root: Path, allowed: Path, listing: Listing) -> None:
    """List the files under ``root`` into ``listing``, in path order."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            rel = PurePosixPath((here / d).relative_to(root).as_posix())
            if (here / d).is_symlink():
                listing.skipped.append({"file": f"{rel}/", "reason": "symbolic link to a folder (not followed)"})
                dirnames.remove(d)
            elif d.lower() in SYSTEM_FILES or d.startswith("."):
                listing.skipped.append({"file": f"{rel}/", "reason": "hidden or system folder"})
                dirnames.remove(d)
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            rel = PurePosixPath(path.relative_to(root).as_posix())
            target = path.resolve()
            if not target.is_relative_to(allowed):
                listing.skipped.append({"file": str(rel), "reason": "symbolic link out of the import folder"})
                continue
            try:
                st = target.stat()
            except OSError:
                listing.skipped.append({"file": str(rel), "reason": "unreadable file"})
                continue
            if not stat.S_ISREG(st.st_mode):
                listing.skipped.append({"file": str(rel), "reason": "not a regular file"})
                continue
            listing.count(st.st_size)
            listing.consider(rel, st.st_size, target, partial(_head, target))


def iter_folder(
    root: Path, allowed: Path, settings: Settings, skipped: list[dict[str, str]], budget: Budget | None = None
) -> Iterator[Member]:
    """Yield the files under ``root`` (itself inside ``allowed``) to decode; append junk to ``skipped``.

    The files' bytes are taken from ``budget`` (the upload's; default: one for this folder).
    """
    listing = Listing(settings, skipped)
    _walk(root, allowed, listing)
    classes = listing.classes()
    budget = budget or Budget(settings.max_unpacked_bytes)
    for entry in listing.entries:
        target = entry.ref
        assert isinstance(target, Path)
        f = _open_regular(target) if target.resolve().is_relative_to(allowed) else None
        if f is None:
            skipped.append({"file": str(entry.name), "reason": "unreadable file"})
            continue
        cap = member_cap(entry.kind, settings)
        with f:
            data = read_capped(f, budget, cap)
        if data is None:
            skipped.append({"file": str(entry.name), "reason": f"too large (over {cap} bytes)"})
            continue
        yield Member(path=entry.name.as_posix(), class_name=classes[entry.name], data=data, kind=entry.kind)
