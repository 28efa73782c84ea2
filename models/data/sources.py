"""What a dataset source is, and its slices: the one path from a file or folder to stored rows.

``source_kind`` tells a source apart: a folder; a zip (``PK\\x03\\x04``); a tar, plain (``ustar``
at offset 257) or compressed (gzip, bzip2, xz holding a tar); a NIfTI volume (``sizeof_hdr`` 348
or 540, also gzipped); a DICOM file (``DICM`` at offset 128); else an image. Magic bytes decide
first, the file name (an upload's multipart filename or ``?filename=``) second, so a file
called ``upload.bin`` or a DICOM file without a suffix is still read right.

``iter_slices`` reads the members of the source one at a time (``models.data.members``: zip;
``models.data.tar_and_folders``: tar and folders; a single file is one member), sends each to its
decoder (``models.data.decode_image``, ``models.data.decode_nifti``, ``models.data.decode_dicom``)
and yields ``Slice`` rows; DICOM frames
come last, series by series, once every file of a series has been seen. What cannot be used is
appended to ``skipped`` with its path and the reason; what refuses the whole upload raises
``Refused``. Torch-free.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from models.data.decode_dicom import DicomSeries
from models.data.decode_image import SkipImage, decode_image_with_size
from models.data.decode_nifti import nifti_slices
from models.data.members import (
    HEAD_BYTES,
    Budget,
    Member,
    Slice,
    iter_zip,
    kind_by_name,
    member_cap,
    sniff,
)
from models.data.tar_and_folders import TAR_SUFFIXES, iter_folder, iter_tar
from models.platform.errors import Refused, TooLarge
from models.platform.settings import Settings

SOURCE_KINDS = ("folder", "zip", "tar", "nifti", "dicom", "image")
_PEEK = 512  # decompressed bytes looked at to tell a .tar.gz from a .nii.gz
_DECOMPRESSORS = {b"\x1f\x8b": gzip.GzipFile, b"BZh": bz2.BZ2File, b"\xfd7zXZ\x00": lzma.LZMAFile}


def _is_tar(block: bytes) -> bool:
    return block[257:262] == b"ustar"


def _peek_compressed(path: Path, opener: type) -> bytes:
    """The first decompressed bytes of a compressed file (empty when they cannot be read)."""
    try:
        with opener(path) as f:
            return f.read(_PEEK)
    except (OSError, EOFError, zlib.error, lzma.LZMAError):
        return b""


def _kind_by_filename(name: str) -> str | None:
    lowered = name.lower()
    if lowered.endswith(".zip"):
        return "zip"
    if lowered.endswith(TAR_SUFFIXES):
        return "tar"
    kind, _ = kind_by_name(PurePosixPath(lowered))
    return kind


def source_kind(path: Path, filename: str | None = None) -> str:
    """One of ``SOURCE_KINDS`` for the file or folder at ``path``; ``filename`` is its name as sent."""
    if path.is_dir():
        return "folder"
    with path.open("rb") as f:
        head = f.read(_PEEK)
    if head[128:132] == b"DICM":  # first: a DICOM preamble may hold another format's header (DICOM-TIFF)
        return "dicom"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if _is_tar(head):
        return "tar"
    for magic, opener in _DECOMPRESSORS.items():
        if head.startswith(magic):
            inner = _peek_compressed(path, opener)
            if _is_tar(inner):
                return "tar"
            if sniff(inner[:HEAD_BYTES]) == "nifti":
                return "nifti"
            break
    kind = sniff(head[:HEAD_BYTES])
    if kind is not None:
        return kind
    named = _kind_by_filename(filename or path.name)
    return named or "image"


def _single_member(path: Path, kind: str, filename: str | None, settings: Settings, budget: Budget) -> Member:
    """A single uploaded or imported file as the one member of its dataset (class ``default``)."""
    size = path.stat().st_size
    cap = member_cap(kind, settings)
    if size > cap:
        raise TooLarge(f"the file of {size} bytes is over the limit of {cap} bytes for one {kind} file")
    budget.take(size, "the file unpacks")
    name = PurePosixPath((filename or path.name).replace("\\", "/")).name or "upload"
    return Member(path=name, class_name="default", data=path.read_bytes(), kind=kind)


def iter_members(
    source: Path,
    settings: Settings,
    skipped: list[dict[str, str]],
    *,
    filename: str | None = None,
    allowed: Path | None = None,
    budget: Budget | None = None,
) -> Iterator[Member]:
    """The members of ``source`` to decode; a folder is read only below ``allowed`` (default: itself).

    Their bytes are taken from ``budget``, the upload's unpacked bytes (default: a new one).
    """
    kind = source_kind(source, filename)
    budget = budget or Budget(settings.max_unpacked_bytes)
    if kind == "folder":
        yield from iter_folder(source, (allowed or source).resolve(), settings, skipped, budget)
    elif kind == "zip":
        yield from iter_zip(source, settings, skipped, budget)
    elif kind == "tar":
        yield from iter_tar(source, settings, skipped, budget)
    else:
        yield _single_member(source, kind, filename, settings, budget)


def _decode(member: Member, settings: Settings, skipped: list[dict[str, str]], budget: Budget) -> Iterator[Slice]:
    """The slices of one image or NIfTI member (none, reported in ``skipped``, when it cannot be used)."""
    try:
        if member.kind == "nifti":
            yield from nifti_slices(member.data, member.path, member.class_name, settings, budget)
        else:
            pixels, size = decode_image_with_size(member.data, settings)
            yield Slice(member.path, member.class_name, pixels, size)
    except SkipImage as exc:
        skipped.append({"file": member.path, "reason": exc.reason})


def iter_slices(
    source: Path,
    settings: Settings,
    skipped: list[dict[str, str]],
    workdir: Path,
    *,
    filename: str | None = None,
    allowed: Path | None = None,
) -> Iterator[Slice]:
    """Every stored slice of ``source`` (see the module docstring); DICOM frames are spooled under ``workdir``.

    Raises ``Refused`` (``Refused``, ``PixelBombError``) when the upload must be
    refused whole: ``TooLarge`` for limits, ``Refused`` for hostile or unreadable content. One ``Budget`` of
    ``max_unpacked_bytes`` counts everything the upload unpacks: the archive's members, gunzipped
    volumes and decoded DICOM frames, all checked before the bytes are made.
    """
    budget = Budget(settings.max_unpacked_bytes)
    with DicomSeries(workdir / "dicom-frames.f32", settings, budget) as series:
        members = iter_members(source, settings, skipped, filename=filename, allowed=allowed, budget=budget)
        for member in members:
            if member.kind == "dicom":
                series.add(member, skipped)
            else:
                yield from _decode(member, settings, skipped, budget)
        yield from series.slices(skipped)


__all__ = ["SOURCE_KINDS", "Refused", "Slice", "iter_members", "iter_slices", "source_kind"]
