"""Reading an uploaded ``.zip`` safely, one member at a time, without extracting anything to disk.

``iter_zip`` yields a ``Member`` (path inside the archive, class name, bytes) per image file.
Before the first byte is decompressed the whole central directory is checked, and the archive
is refused as a whole (``ArchiveRefused``, carrying the HTTP status) when it is:

- not a zip (422);
- declaring, in its end records, more members or a larger central directory than the limits
  allow: checked before ``zipfile`` loads the directory into memory (413);
- holding a member whose name is absolute, has a ``..`` component, a drive letter or a NUL,
  with ``\\`` read as a separator (422); a symlink member (422); an encrypted member (422);
- larger than the limits: more members than ``max_archive_members`` or a total declared
  uncompressed size over ``max_unpacked_bytes`` (413). The real decompressed bytes are counted
  too while reading, since declared sizes can lie (413); a member whose data does not match its
  declared size or CRC makes the archive corrupt (422).

Junk is skipped and reported, not refused: ``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, hidden
files, files that are not images by their extension. Directories are passed over silently.

Classes come from the folder layout, after stripping the folders that every image shares
(``brain_tumor_dataset/yes/a.png`` and ``brain_tumor_dataset/no/b.png`` -> ``yes``, ``no``):
the first remaining folder names the class, and images left with no folder are in ``default``.
Torch-free.
"""

from __future__ import annotations

import logging
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from models.images import UploadRefused
from models.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_CLASS = "default"
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm", ".pnm", ".pbm"}
)
SYSTEM_FILES = frozenset({"__macosx", ".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20
# The largest file one image may be: 8 bytes per allowed pixel (16-bit RGBA, uncompressed) plus headers.
_BYTES_PER_PIXEL = 8
_HEADER_ALLOWANCE = 1 << 20
# Central directory bytes allowed per member before zipfile parses it (its entries cost memory):
# a real entry is 46 bytes plus its name and extra fields, rarely over a few hundred bytes.
_DIRECTORY_BYTES_PER_MEMBER = 1024
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_EOCD64 = b"PK\x06\x06"
_EOCD64_SIZE = 56
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64_LOCATOR_SIZE = 20


class ArchiveRefused(UploadRefused):
    """The whole archive is refused; ``status_code`` is 413 for limits, 422 for bad or hostile content."""


@dataclass(frozen=True)
class Member:
    """One image file of the archive, read into memory."""

    path: str  # as in the archive, with ``/`` separators
    class_name: str
    data: bytes


def safe_name(raw: str) -> PurePosixPath:
    """The member name as a relative path; refuses names that could escape an extraction folder."""
    name = raw.replace("\\", "/")
    if "\x00" in name or name.startswith("/") or _DRIVE.match(name):
        raise ArchiveRefused(422, f"unsafe member name in archive: {raw!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or any(_DRIVE.match(p) for p in parts):
        raise ArchiveRefused(422, f"unsafe member name in archive: {raw!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def junk_reason(path: PurePosixPath) -> str | None:
    """Why a (non-directory) member is not an image to read, or None when it should be decoded."""
    lowered = [p.lower() for p in path.parts]
    if any(p in SYSTEM_FILES for p in lowered):
        return "system file"
    if any(p.startswith(".") for p in lowered):
        return "hidden file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image"
    return None


def class_names(paths: list[PurePosixPath]) -> list[str]:
    """The class of each image path: first folder after the folders all paths share, or ``default``."""
    folders = [p.parts[:-1] for p in paths]
    common = 0
    if folders:
        shortest = min(len(f) for f in folders)
        while common < shortest and len({f[common] for f in folders}) == 1:
            common += 1
    return [f[common] if len(f) > common else DEFAULT_CLASS for f in folders]


def directory_extent(path: Path) -> tuple[int, int] | None:
    """(entries, central directory bytes) from the end records, read before zipfile parses anything.

    None when no end record is found (zipfile then decides whether this is a zip at all).
    """
    with path.open("rb") as f:
        size = f.seek(0, 2)
        tail_len = min(size, _EOCD_SIZE + 0xFFFF + _EOCD64_LOCATOR_SIZE + _EOCD64_SIZE)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < _EOCD_SIZE:
        return None
    entries, cd_size = struct.unpack("<HI", tail[pos + 10 : pos + 16])
    locator = pos - _EOCD64_LOCATOR_SIZE
    record = locator - _EOCD64_SIZE
    if record >= 0 and tail[locator : locator + 4] == _EOCD64_LOCATOR and tail[record : record + 4] == _EOCD64:
        entries64, cd_size64 = struct.unpack("<QQ", tail[record + 32 : record + 48])
        entries, cd_size = max(entries, entries64), max(cd_size, cd_size64)
    return entries, cd_size


def _check_extent(path: Path, settings: Settings) -> None:
    """Refuse oversized central directories before zipfile loads them into memory."""
    extent = directory_extent(path)
    if extent is None:
        return
    entries, cd_size = extent
    limit = settings.max_archive_members
    if entries > limit:
        raise ArchiveRefused(413, f"archive has {entries} members, more than the limit of {limit}")
    if cd_size > limit * _DIRECTORY_BYTES_PER_MEMBER:
        raise ArchiveRefused(413, f"archive directory of {cd_size} bytes is too large for {limit} members")


def _check_directory(zf: zipfile.ZipFile, settings: Settings) -> list[zipfile.ZipInfo]:
    """Validate every entry of the central directory; refuse the archive on the first hostile one."""
    infos = zf.infolist()
    if len(infos) > settings.max_archive_members:
        raise ArchiveRefused(
            413, f"archive has {len(infos)} members, more than the limit of {settings.max_archive_members}"
        )
    declared = 0
    for info in infos:
        safe_name(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveRefused(422, f"symbolic link in archive: {info.filename!r}")
        if info.flag_bits & 0x1:
            raise ArchiveRefused(422, f"encrypted member in archive: {info.filename!r}")
        declared += info.file_size
    if declared > settings.max_unpacked_bytes:
        raise ArchiveRefused(
            413, f"archive unpacks to {declared} bytes, more than the limit of {settings.max_unpacked_bytes}"
        )
    return infos


class _Budget:
    """Real decompressed bytes, counted across the whole archive."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ArchiveRefused(413, f"archive unpacks to more than the limit of {self.limit} bytes")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, cap: int) -> bytes | None:
    """The member's bytes, or None when it is over ``cap``; refuses the archive when it is corrupt."""
    buf = bytearray()
    try:
        with zf.open(info) as f:
            while chunk := f.read(_CHUNK):
                budget.take(len(chunk))
                buf += chunk
                if len(buf) > cap:
                    return None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ArchiveRefused(422, f"corrupt archive member {info.filename!r}: {exc}") from None
    return bytes(buf)


def iter_zip(path: Path, settings: Settings, skipped: list[dict[str, str]]) -> Iterator[Member]:
    """Yield the image members of the zip at ``path`` in path order; append junk to ``skipped``.

    Raises ``ArchiveRefused`` for archives that must be refused whole (see the module docstring),
    possibly after some members were yielded (a lying size is only found while reading).
    """
    cap = settings.max_image_pixels * _BYTES_PER_PIXEL + _HEADER_ALLOWANCE
    _check_extent(path, settings)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise ArchiveRefused(422, "the upload is not a valid zip archive") from None
    with zf:
        infos = _check_directory(zf, settings)
        images: list[tuple[PurePosixPath, zipfile.ZipInfo]] = []
        for info in infos:
            if info.is_dir():
                continue
            name = safe_name(info.filename)
            reason = junk_reason(name)
            if reason is not None:
                skipped.append({"file": str(name), "reason": reason})
            elif info.file_size > cap:
                skipped.append({"file": str(name), "reason": f"too large ({info.file_size} bytes)"})
            else:
                images.append((name, info))
        images.sort(key=lambda item: item[0].as_posix())
        classes = class_names([name for name, _ in images])
        budget = _Budget(settings.max_unpacked_bytes)
        for (name, info), class_name in zip(images, classes, strict=True):
            try:
                data = _read_member(zf, info, budget, cap)
            except NotImplementedError:
                skipped.append({"file": str(name), "reason": "unsupported zip compression"})
                continue
            if data is None:
                skipped.append({"file": str(name), "reason": f"too large (over {cap} bytes)"})
                continue
            yield Member(path=name.as_posix(), class_name=class_name, data=data)
