"""The Files API's storage: uploaded input files, result files a batch job generated, and
resumable uploads in progress, all in memory.

A resumable upload (what `client.files.upload` does, and Google's REST example) starts with
`POST /upload/v1beta/files` (`X-Goog-Upload-Protocol: resumable`, `X-Goog-Upload-Command: start`,
`X-Goog-Upload-Header-Content-Length: N`, a JSON body `{"file": {...}}`); the answer's
`X-Goog-Upload-URL` header is where the bytes go, in chunks (`X-Goog-Upload-Command: upload`, or
`upload, finalize` for the last, with `X-Goog-Upload-Offset`). The upload URL itself is the
credential: the SDK sends no API key with the chunks. Input files may be up to 2 GB (Batch API
guide).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Literal

from .google_errors import ApiError, bad_request, file_not_found

MAX_FILE_BYTES = 2 * 1024**3
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

Source = Literal["UPLOADED", "GENERATED"]


def random_id(length: int) -> str:
    """A resource id like Google's: lowercase letters and digits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass
class StoredFile:
    name: str  # "files/<id>"
    mime_type: str
    data: bytes
    create_time: float
    source: Source
    display_name: str | None = None
    sha256: str = ""  # hex digest of `data`

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.data).hexdigest()

    @property
    def id(self) -> str:
        return self.name.removeprefix("files/")


@dataclass
class Upload:
    upload_id: str
    name: str
    mime_type: str
    size: int  # what X-Goog-Upload-Header-Content-Length announced
    display_name: str | None = None
    received: bytearray = field(default_factory=bytearray)


class UploadError(ApiError):
    """A refused chunk: answered with `X-Goog-Upload-Status: final`, so the SDK stops at once and
    raises the error instead of retrying a chunk that can never fit."""


class FileStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._uploads: dict[str, Upload] = {}

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._uploads.clear()

    def start_upload(self, name: str | None, display_name: str | None, mime_type: str, size: int) -> Upload:
        if size > MAX_FILE_BYTES:
            raise bad_request(
                f"The file size ({size} bytes) exceeds the maximum allowed size ({MAX_FILE_BYTES} bytes)."
            )
        with self._lock:
            if name is None:
                name = f"files/{random_id(12)}"
            elif name in self._files:
                raise ApiError(409, f"File {name.removeprefix('files/')} already exists.", status="ALREADY_EXISTS")
            upload = Upload(random_id(40), name, mime_type, size, display_name)
            self._uploads[upload.upload_id] = upload
            return upload

    def append(self, upload_id: str, offset: int, chunk: bytes, finalize: bool, now: float) -> StoredFile | None:
        """Add a chunk; the stored file once finalized, else None (the upload stays active)."""
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is None:
                raise UploadError(404, "The upload session does not exist or has expired.")
            if offset != len(upload.received):
                raise UploadError(
                    400, f"Invalid upload offset {offset}: {len(upload.received)} bytes were received so far."
                )
            if len(upload.received) + len(chunk) > upload.size:
                raise UploadError(400, f"The upload exceeds the announced size of {upload.size} bytes.")
            upload.received += chunk
            if not finalize:
                return None
            if len(upload.received) != upload.size:
                raise UploadError(400, f"The upload was finalized after {len(upload.received)} of {upload.size} bytes.")
            del self._uploads[upload_id]
            stored = StoredFile(
                upload.name, upload.mime_type, bytes(upload.received), now, "UPLOADED", upload.display_name
            )
            self._files[stored.name] = stored
            return stored

    def add_generated(self, name: str, data: bytes, mime_type: str, now: float) -> StoredFile:
        stored = StoredFile(name, mime_type, data, now, "GENERATED")
        with self._lock:
            self._files[name] = stored
        return stored

    def get(self, name: str) -> StoredFile:
        with self._lock:
            stored = self._files.get(name)
        if stored is None:
            raise file_not_found(name.removeprefix("files/"))
        return stored

    def delete(self, name: str) -> None:
        with self._lock:
            if self._files.pop(name, None) is None:
                raise file_not_found(name.removeprefix("files/"))

    def count(self) -> int:
        with self._lock:
            return len(self._files)
