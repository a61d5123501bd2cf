"""The uploaded file out of a multipart request body, read within UPLOAD_MAX_BYTES: a declared
Content-Length over the limit is refused before a byte is read, and a body sent without one is counted
as it arrives and refused once past it. Called by the upload route after its authentication
dependency, so an unauthenticated body is never read at all."""

from __future__ import annotations

import re
import unicodedata

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect
from starlette.types import Message

_MULTIPART_OVERHEAD = 64 * 1024  # boundary lines and part headers around the file, at most
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is larger than the limit of {limit:,} bytes (UPLOAD_MAX_BYTES)")


def clean_filename(raw: str | None) -> str:
    """The file's own name: no folders (some browsers send a whole Windows path), no control characters,
    nothing PostgreSQL's text can't hold (a lone surrogate becomes '?'), in NFC: macOS sends "ガ" as
    "カ" + U+3099 (NFD), Windows as one character, and a document is known by its name."""
    name = (raw or "").encode("utf-8", "replace").decode("utf-8")
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE_NAME.sub("", name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or "upload"


async def read_upload(request: Request, limit: int) -> tuple[str, bytes]:
    """The name and bytes of the file in the form field `file`; HTTPException 413, 422 or 400 if not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise _too_large(limit)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise HTTPException(422, "send the file as multipart/form-data, in a field named 'file'")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit + _MULTIPART_OVERHEAD:
                raise _BodyTooLarge
        return message

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=16)
    except _BodyTooLarge:
        raise _too_large(limit) from None
    except ClientDisconnect:
        raise HTTPException(400, "the client went away before the upload was complete") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "the form has no file in a field named 'file'")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise _too_large(limit)
        return clean_filename(upload.filename), data
    finally:
        await form.close()
