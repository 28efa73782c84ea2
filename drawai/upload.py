"""Sending a dataset to the API from the command line (``drawai datasets add PATH``).

What is sent, always as one multipart ``POST /datasets`` (field ``file``, plus ``name``):

- a folder (a folder per class, a DICOM directory, anything): zipped on the fly into a temporary
  file (removed afterwards), with its sub-folders kept (``<folder>/yes/a.png``) and nothing
  skipped, so that the server, not the client, decides what is junk and reports it. Files that are
  already compressed (PNG, JPEG, ``.gz``...) are stored, the rest (DICOM, BMP, text) deflated;
- a file (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``, ``.nii``, ``.nii.gz``, ``.dcm``, or
  anything else: the server answers 415/422 for what it cannot read): sent as it is.

The body is streamed from disk in httpx's 64 KiB chunks (a file object in ``files=`` is read
chunk by chunk, with its length from ``fstat`` for the ``Content-Length``), never loaded whole;
``ProgressReader`` reports the bytes read as they go. Problems a user can act on raise
``UploadError`` with a message for the terminal.

Every request carries ``Authorization: Bearer <key>`` (``auth_headers``): ``DRAWAI_API_KEY``, else
the first of ``DRAWAI_API_KEYS``, else no header (an API without keys needs none).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import httpx

from drawai.client._base import api_detail
from models.platform.settings import Settings, split_keys

# Already-compressed formats: deflating them again costs time and saves nothing.
_STORED_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".gif", ".webp", ".gz", ".tgz", ".zip", ".bz2", ".xz", ".zst", ".j2k", ".jp2"}
)
_DEFLATE_LEVEL = 1  # fast: DICOM and BMP shrink by about half at level 1, barely more at 9
# Connect and write quickly or fail; the answer may take minutes: the server ingests the whole
# upload (decoding every image) before it answers.
TIMEOUT = httpx.Timeout(30.0, read=3600.0)


class UploadError(Exception):
    """A failure to report to the user as it is (no traceback)."""


class ProgressReader:
    """A binary file that calls ``on_position(bytes_read_so_far)`` after every read or seek.

    Passed to httpx in ``files=``: httpx reads it in chunks as it sends the body, takes its
    length from ``fileno()``, and seeks it to 0 before sending (and again if it resends).
    """

    def __init__(self, f: BinaryIO, on_position: Callable[[int], None]) -> None:
        self._f = f
        self._on_position = on_position
        self.name = f.name

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._on_position(self._f.tell())
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        pos = self._f.seek(offset, whence)
        self._on_position(pos)
        return pos

    def tell(self) -> int:
        return self._f.tell()

    def fileno(self) -> int:
        return self._f.fileno()


def folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, in path order (symlinked files included, symlinked folders not entered)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames))
    return found


def zip_folder(folder: Path, dest: Path, on_file: Callable[[Path], None] | None = None) -> int:
    """Zip every file under ``folder`` into ``dest`` as ``<folder name>/<relative path>``; the file count."""
    files = folder_files(folder)
    top = folder.resolve().name or "dataset"
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=_DEFLATE_LEVEL) as zf:
        for path in files:
            arcname = f"{top}/{path.relative_to(folder).as_posix()}"
            method = zipfile.ZIP_STORED if path.suffix.lower() in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            try:
                zf.write(path, arcname, compress_type=method)
            except OSError as exc:
                raise UploadError(f"cannot read {path}: {exc.strerror or exc}") from None
            if on_file is not None:
                on_file(path)
    return len(files)


@contextlib.contextmanager
def upload_source(path: Path, zip_into: Callable[[Path, Path], object] = zip_folder) -> Iterator[tuple[Path, str]]:
    """The file to send for ``path`` and the name to give it; a folder is first zipped (``zip_into``) to a temp file."""
    if not path.exists():
        raise UploadError(f"no such file or folder: {path}")
    if path.is_file():
        yield path, path.name
        return
    if not path.is_dir():
        raise UploadError(f"not a file or a folder: {path}")
    fd, tmp = tempfile.mkstemp(prefix="drawai-upload-", suffix=".zip")
    os.close(fd)
    try:
        zip_into(path, Path(tmp))
        yield Path(tmp), f"{path.resolve().name or 'dataset'}.zip"
    finally:
        Path(tmp).unlink(missing_ok=True)


def auth_headers(settings: Settings) -> dict[str, str]:
    """The header the CLI sends: ``Authorization: Bearer`` ``DRAWAI_API_KEY``, else the first of ``DRAWAI_API_KEYS``."""
    key = settings.api_key.get_secret_value().strip() if settings.api_key is not None else ""
    key = key or next(iter(split_keys(settings.api_keys)), "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def error_detail(response: httpx.Response) -> str:
    """``HTTP <status>: <detail>`` from a JSON error body (``{"detail": ...}``), else from its text."""
    detail = api_detail(response)
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return f"HTTP {response.status_code}: {detail}"


def request_json(client: httpx.Client, method: str, url: str, **kwargs: Any) -> Any:
    """Send a request; its JSON answer, or ``UploadError`` for HTTP errors and unreachable servers."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.ConnectError as exc:
        raise UploadError(
            f"cannot connect to the Draw.AI API at {client.base_url}: {exc} (start it with `drawai up`, or pass --url)"
        ) from None
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        # The server may stop reading and close the connection when it refuses a body early
        # (over DRAWAI_MAX_UPLOAD_BYTES, say); httpx then fails while writing and never sees the answer.
        raise UploadError(
            f"the server at {client.base_url} closed the connection during the request ({exc or type(exc).__name__}); "
            "an upload over the server's DRAWAI_MAX_UPLOAD_BYTES is cut off this way"
        ) from None
    except httpx.TimeoutException as exc:
        raise UploadError(f"the server at {client.base_url} did not answer in time ({type(exc).__name__})") from None
    if response.status_code in (401, 403):
        hint = "set DRAWAI_API_KEY to one of the server's DRAWAI_API_KEYS"
        raise UploadError(f"{error_detail(response)} ({hint})")
    if response.status_code >= 400:
        raise UploadError(error_detail(response))
    return response.json()


def list_all(client: httpx.Client, path: str, page_size: int = 500) -> list[Any]:
    """Every item of a list route (``{"data", "count"}`` pages), fetched a page at a time."""
    items: list[Any] = []
    while True:
        page = request_json(client, "GET", path, params={"limit": page_size, "offset": len(items)})
        items.extend(page["data"])
        if not page["data"] or len(items) >= page["count"]:
            return items


def post_dataset(
    client: httpx.Client,
    file: Path,
    filename: str,
    name: str | None,
    on_position: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Stream ``file`` to ``POST /datasets`` as ``filename``; the server's report."""
    with file.open("rb") as f:
        body = cast(BinaryIO, ProgressReader(f, on_position)) if on_position is not None else f
        data = {"name": name} if name else {}
        report = request_json(client, "POST", "/datasets", files={"file": (filename, body)}, data=data)
    return dict(report)
