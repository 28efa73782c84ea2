"""Streaming upload bodies to disk: multipart forms (parsed as they arrive) and raw bodies.

The body is never held whole in memory: multipart bodies go through ``python_multipart``'s
streaming parser chunk by chunk, and the upload is refused with 413 as soon as it passes the limit.
"""

from __future__ import annotations

from pathlib import Path

import anyio
from fastapi import HTTPException, Request
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

# Raw body types, with the file name that tells their kind when the bytes do not (see models.data.sources).
CONTENT_TYPE_NAMES: dict[str, str | None] = {
    "application/zip": "upload.zip",
    "application/x-zip-compressed": "upload.zip",
    "application/x-zip": "upload.zip",
    "application/x-tar": "upload.tar",
    "application/x-gtar": "upload.tar.gz",
    "application/x-compressed-tar": "upload.tar.gz",
    "application/gzip": None,  # a .tar.gz or a .nii.gz: the bytes tell
    "application/x-gzip": None,
    "application/dicom": "upload.dcm",
    "application/x-nifti": "upload.nii",
    "image/png": "upload.png",
    "image/jpeg": "upload.jpg",
    "image/tiff": "upload.tif",
    "image/bmp": "upload.bmp",
    "application/octet-stream": None,
}
RAW_TYPES = frozenset(CONTENT_TYPE_NAMES)
_BINARY = {"type": "string", "format": "binary"}
FILE_FIELD = "file"
NAME_FIELD = "name"
MAX_NAME = 100
_MAX_FIELD_BYTES = 4096  # small form fields (the name) are kept in memory; longer ones are refused
# The OpenAPI request body of POST /datasets (the route reads the body itself, as it streams).
UPLOAD_BODY = {
    "required": True,
    "description": "one file: a multipart form (field 'file', optional 'name'), or the file itself as the body",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [FILE_FIELD],
                "properties": {FILE_FIELD: _BINARY, NAME_FIELD: {"type": "string", "maxLength": MAX_NAME}},
            }
        },
        **{content_type: {"schema": _BINARY} for content_type in sorted(RAW_TYPES)},
    },
}


class _Form:
    """A multipart/form-data body parsed as it streams: the file part goes to disk, small fields to memory."""

    def __init__(self, boundary: bytes) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.ended = False
        self.pending: list[bytes] = []  # file bytes parsed from the current chunk, not yet written
        self._file_seen = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._target: str | None = None  # FILE_FIELD, a field name, or None for parts that are ignored
        self._value = bytearray()
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def _part_begin(self) -> None:
        self._disposition, self._target = b"", None
        self._value.clear()

    def _header_end(self) -> None:
        if bytes(self._header_field).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        field = params.get(b"name", b"").decode("utf-8", "replace")
        if field == FILE_FIELD:
            if self._file_seen:
                raise HTTPException(422, f"more than one {FILE_FIELD!r} part in the form")
            self._file_seen = True
            self.filename = params.get(b"filename", b"").decode("utf-8", "replace") or None
            self._target = FILE_FIELD
        elif field == NAME_FIELD:
            self._target = field

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target == FILE_FIELD:
            self.pending.append(data[start:end])
        elif self._target is not None:
            self._value.extend(data[start:end])
            if len(self._value) > _MAX_FIELD_BYTES:
                raise HTTPException(422, f"form field {self._target!r} is too long")

    def _part_end(self) -> None:
        if self._target not in (None, FILE_FIELD):
            try:
                self.fields[self._target] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPException(422, f"form field {self._target!r} is not UTF-8") from None

    def _end(self) -> None:
        self.ended = True

    def check_complete(self) -> None:
        if not self.ended:
            raise HTTPException(400, "incomplete multipart body")
        if not self._file_seen:
            raise HTTPException(422, f"missing form field {FILE_FIELD!r} (the file to upload)")


async def receive_upload(request: Request, dest: Path, limit: int) -> _Form | None:
    """Stream the body's file into ``dest``; the parsed form for multipart bodies, else None.

    Raises ``HTTPException``: 413 past ``limit`` bytes, 415 for other content types, 400 for
    malformed bodies.
    """
    mime, params = parse_options_header(request.headers.get("content-type"))
    content_type = mime.decode("latin-1").lower()
    form: _Form | None = None
    if content_type == "multipart/form-data":
        if not params.get(b"boundary"):
            raise HTTPException(400, "multipart body without a boundary")
        form = _Form(params[b"boundary"])
    elif content_type and content_type not in RAW_TYPES:
        raise HTTPException(
            415,
            f"unsupported content type {content_type!r}: send a multipart form, or the file itself as "
            "application/zip, application/gzip, application/x-tar, application/dicom or application/octet-stream",
        )
    received = 0
    async with await anyio.open_file(dest, "wb") as out:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise HTTPException(413, f"upload is larger than the limit of {limit} bytes")
            if form is None:
                await out.write(chunk)
                continue
            try:
                form.parser.write(chunk)
            except MultipartParseError as exc:
                raise HTTPException(400, f"malformed multipart body: {exc}") from None
            if form.pending:
                await out.write(b"".join(form.pending))
                form.pending.clear()
    if form is not None:
        form.check_complete()
    return form


def name_for_content_type(request: Request) -> str | None:
    """A file name telling the kind of a raw body from its content type (None: the bytes must tell)."""
    mime, _ = parse_options_header(request.headers.get("content-type"))
    return CONTENT_TYPE_NAMES.get(mime.decode("latin-1").lower())


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse at once a body whose Content-Length is over the limit."""
    try:
        length = int(request.headers.get("content-length", "0"))
    except ValueError:
        raise HTTPException(400, "invalid Content-Length header") from None
    if length > limit:
        raise HTTPException(413, f"upload of {length} bytes is larger than the limit of {limit} bytes")


def dataset_name(given: str | None, filename: str | None) -> str:
    """The name given, else the uploaded file's stem, else ``dataset``; refuses unprintable names."""
    if given is None:
        stem = Path(filename.replace("\\", "/")).name.split(".")[0] if filename else ""
        given = stem[:MAX_NAME] or "dataset"
    name = given.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise HTTPException(422, f"dataset name must be 1 to {MAX_NAME} printable characters")
    return name
