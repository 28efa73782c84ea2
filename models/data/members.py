"""The rules every container of files shares (zip, tar, an imported folder), and reading a ``.zip``.

A container is read in two steps, without extracting anything to disk:

1. **Listing**: every member is checked before any is decoded. Hostile content refuses the whole
   container (``Refused``, carrying the HTTP status): a name that is absolute, has a ``..``
   component, a drive letter or a NUL, with ``\\`` read as a separator (``Refused``); a symlink, hardlink,
   device, FIFO or encrypted member (``Refused``); more members than ``max_archive_members`` or more
   declared bytes than ``max_unpacked_bytes`` (``TooLarge``). Junk is skipped and reported, not refused:
   ``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, hidden files, nested archives, and files that are
   neither images, NIfTI volumes nor DICOM (a file without a known suffix is sniffed: ``DICM`` at
   offset 128, a NIfTI header, an image signature). Directories are passed over silently.
2. **Reading**: the kept members are read one at a time (``Member``: path, kind, class, bytes),
   with the real decompressed bytes counted against ``max_unpacked_bytes`` (declared sizes can
   lie: ``TooLarge``) and a member that does not match its declared size or CRC refusing the archive (``Refused``).
   That count (``Budget``) is the upload's: gunzipped volumes and decoded DICOM frames take from it too.

Classes come from the folder layout of the kept members (``class_names``). For a zip, the central
directory is checked before ``zipfile`` loads it (end records declaring too many entries: ``TooLarge``) and
members are read in path order. Torch-free.
"""

from __future__ import annotations

import logging
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from models.data.split import Source
from models.platform.errors import Refused, TooLarge
from models.platform.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_CLASS = "default"
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm", ".pnm", ".pbm"}
)
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
NESTED_ARCHIVE_SUFFIXES = frozenset({".zip", ".tar", ".tgz", ".tbz2", ".txz", ".7z", ".rar", ".gz", ".bz2", ".xz"})
SYSTEM_FILES = frozenset({"__macosx", ".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db"})
# Folders that split a download into its own training/test sets: merged, the held-out split is ours.
SPLIT_FOLDERS = frozenset({"train", "training", "test", "testing", "val", "valid", "validation"})
HEAD_BYTES = 352  # enough to sniff DICOM (DICM at 128) and NIfTI-1 (magic at 344)
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
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class Entry:
    """A member kept by the listing: its name, declared size, kind (image, nifti, dicom) and handle."""

    name: PurePosixPath
    size: int
    kind: str
    ref: object  # the container's handle: a ZipInfo, a tar member's index, a file's Path


@dataclass(frozen=True)
class Member:
    """One file to decode, read into memory."""

    path: str  # as in the container, with ``/`` separators
    class_name: str
    data: bytes
    kind: str = "image"  # image, nifti or dicom


@dataclass(frozen=True)
class Slice:
    """One stored slice and where it came from (``path`` names the file, and the frame or slice)."""

    path: str
    class_name: str
    pixels: np.ndarray  # uint8 [S, S]
    original_size: tuple[int, int]  # (width, height) before resizing and padding
    source: Source | None = None  # its volume or series and position (None: an image file, grouped at the end)


def safe_name(raw: str) -> PurePosixPath:
    """The member name as a relative path; refuses names that could escape an extraction folder."""
    name = raw.replace("\\", "/")
    if "\x00" in name or name.startswith("/") or _DRIVE.match(name):
        raise Refused(f"unsafe member name in archive: {raw!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or any(_DRIVE.match(p) for p in parts):
        raise Refused(f"unsafe member name in archive: {raw!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def kind_by_name(path: PurePosixPath) -> tuple[str | None, str | None]:
    """(kind, None) when the name tells the kind, (None, reason) for junk, (None, None) to sniff the bytes."""
    lowered = [p.lower() for p in path.parts]
    if any(p in SYSTEM_FILES for p in lowered):
        return None, "system file"
    if any(p.startswith(".") for p in lowered):
        return None, "hidden file"
    name = lowered[-1] if lowered else ""
    suffix = path.suffix.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti", None
    if suffix in IMAGE_SUFFIXES:
        return "image", None
    if suffix in DICOM_SUFFIXES:
        return "dicom", None
    if suffix in NESTED_ARCHIVE_SUFFIXES:
        return None, "nested archive (not read)"
    return None, None


def sniff(head: bytes) -> str | None:
    """The kind of a file from its first bytes: DICOM (``DICM`` at 128), NIfTI-1/2, image; None when unknown."""
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c") and head[344:347] in (b"n+1", b"ni1"):
        return "nifti"
    if head[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") and head[4:7] in (b"n+2", b"ni2"):
        return "nifti"
    if head.startswith(_IMAGE_MAGIC):
        return "image"
    return None


def member_cap(kind: str, settings: Settings) -> int:
    """The most bytes one member of that kind may have: an image's worth of pixels; a volume or DICOM more."""
    if kind == "image":
        return settings.max_image_pixels * _BYTES_PER_PIXEL + _HEADER_ALLOWANCE
    return settings.max_unpacked_bytes


def class_names(paths: list[PurePosixPath]) -> list[str]:
    """The class of each path: first folder after the folders all paths share, or ``default``.

    Folders named like a split of the download (``Training``, ``test``, ``val``...) are ignored, so
    ``archive/Training/yes`` and ``archive/Testing/yes`` are both class ``yes``.
    """
    folders = [tuple(p for p in path.parts[:-1] if p.lower() not in SPLIT_FOLDERS) for path in paths]
    common = 0
    if folders:
        shortest = min(len(f) for f in folders)
        while common < shortest and len({f[common] for f in folders}) == 1:
            common += 1
    return [f[common] if len(f) > common else DEFAULT_CLASS for f in folders]


class Listing:
    """The members of one container that will be read, and the junk skipped on the way."""

    def __init__(self, settings: Settings, skipped: list[dict[str, str]]) -> None:
        self.settings = settings
        self.skipped = skipped
        self.entries: list[Entry] = []
        self.declared = 0
        self.seen = 0

    def count(self, size: int) -> None:
        """Count one member (any kind) against the member and unpacked-bytes limits."""
        self.seen += 1
        self.declared += max(0, size)
        limit = self.settings.max_archive_members
        if self.seen > limit:
            raise TooLarge(f"archive has more than the limit of {limit} members")
        if self.declared > self.settings.max_unpacked_bytes:
            raise TooLarge(f"archive unpacks to more than the limit of {self.settings.max_unpacked_bytes} bytes")

    def consider(self, name: PurePosixPath, size: int, ref: object, head: Callable[[], bytes]) -> None:
        """Keep a regular file as an entry, or report why it is skipped; ``head`` reads its first bytes."""
        kind, reason = kind_by_name(name)
        if kind is None and reason is None:
            kind = sniff(head())
            reason = None if kind is not None else "not an image"
        if kind is None:
            self.skipped.append({"file": str(name), "reason": reason or "not an image"})
        elif size > member_cap(kind, self.settings):
            self.skipped.append({"file": str(name), "reason": f"too large ({size} bytes)"})
        else:
            self.entries.append(Entry(name=name, size=size, kind=kind, ref=ref))

    def classes(self) -> dict[PurePosixPath, str]:
        return dict(zip((e.name for e in self.entries), class_names([e.name for e in self.entries]), strict=True))


class Budget:
    """The unpacked bytes of one upload (``max_unpacked_bytes``), shared by everything that unpacks.

    Archive members as decompressed, gunzipped NIfTI volumes and decoded DICOM frames all take from
    the one budget (``models.data.sources.iter_slices`` makes it), so no mix of them passes the limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int, what: str = "archive unpacks") -> None:
        """Count ``n`` more bytes; ``what`` (``"archive unpacks"``...) starts the ``TooLarge`` message."""
        self.used += n
        if self.used > self.limit:
            raise TooLarge(
                f"{what} to more than the limit of {self.limit} bytes of one upload (DRAWAI_MAX_UNPACKED_BYTES)"
            )


def read_capped(stream: IO[bytes], budget: Budget, cap: int, head: bytes = b"") -> bytes | None:
    """The rest of ``stream`` after ``head`` (already read from it), or None past ``cap`` bytes."""
    buf = bytearray(head)
    while chunk := stream.read(_CHUNK):
        budget.take(len(chunk))
        buf += chunk
        if len(buf) > cap:
            return None
    return bytes(buf)


# -- zip ------------------------------------------------------------------------------------
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
        raise TooLarge(f"archive has {entries} members, more than the limit of {limit}")
    if cd_size > limit * _DIRECTORY_BYTES_PER_MEMBER:
        raise TooLarge(f"archive directory of {cd_size} bytes is too large for {limit} members")


def _check_zip_entry(info: zipfile.ZipInfo) -> None:
    """Refuse links, special files and encrypted members."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise Refused(f"symbolic link in archive: {info.filename!r}")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise Refused(f"special file (device, FIFO or socket) in archive: {info.filename!r}")
    if info.flag_bits & 0x1:
        raise Refused(f"encrypted member in archive: {info.filename!r}")


def _zip_head(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with zf.open(info) as f:
            return f.read(HEAD_BYTES)
    except NotImplementedError:
        return b""  # an unsupported compression method: reported when read
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise Refused(f"corrupt archive member {info.filename!r}: {exc}") from None


def _read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, cap: int) -> bytes | None:
    """The member's bytes, or None when it is over ``cap``; refuses the archive when it is corrupt."""
    try:
        with zf.open(info) as f:
            return read_capped(f, budget, cap)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise Refused(f"corrupt archive member {info.filename!r}: {exc}") from None


def iter_zip(
    path: Path, settings: Settings, skipped: list[dict[str, str]], budget: Budget | None = None
) -> Iterator[Member]:
    """Yield the members of the zip at ``path`` to decode, in path order; append junk to ``skipped``.

    The decompressed bytes are taken from ``budget`` (the upload's; default: one for this archive).

    Raises ``Refused`` for archives that must be refused whole (see the module docstring),
    possibly after some members were yielded (a lying size is only found while reading).
    """
    _check_extent(path, settings)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise Refused("the upload is not a valid zip archive") from None
    with zf:
        infos = zf.infolist()
        listing = Listing(settings, skipped)
        for info in infos:  # the whole directory is checked before anything is read
            safe_name(info.filename)
            _check_zip_entry(info)
            listing.count(info.file_size)
        for info in sorted(infos, key=lambda i: safe_name(i.filename).as_posix()):
            if not info.is_dir():
                listing.consider(safe_name(info.filename), info.file_size, info, partial(_zip_head, zf, info))
        classes = listing.classes()
        budget = budget or Budget(settings.max_unpacked_bytes)
        for entry in listing.entries:
            member = entry.ref
            assert isinstance(member, zipfile.ZipInfo)
            cap = member_cap(entry.kind, settings)
            try:
                data = _read_zip_member(zf, member, budget, cap)
            except NotImplementedError:
                skipped.append({"file": str(entry.name), "reason": "unsupported zip compression"})
                continue
            if data is None:
                skipped.append({"file": str(entry.name), "reason": f"too large (over {cap} bytes)"})
                continue
            yield Member(path=entry.name.as_posix(), class_name=classes[entry.name], data=data, kind=entry.kind)
