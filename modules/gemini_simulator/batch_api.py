"""HTTP routes of the Batch API (embeddings) and the Files API, on /v1 and /v1beta alike (SDK 3.6.1
defaults the Gemini API to v1; Google's examples use v1beta):

  POST   /{v}/models/{model}:asyncBatchEmbedContent   create a job -> Operation
  GET    /{v}/batches?pageSize=&pageToken=            list jobs, newest first -> {operations, nextPageToken}
  GET    /{v}/batches/{id}                            a job -> Operation
  POST   /{v}/batches/{id}:cancel                     cancel a pending/running job -> {}
  DELETE /{v}/batches/{id}                            forget a job -> {}
  POST   /upload/{v}/files                            start a resumable upload (then its chunks)
  GET    /{v}/files/{id}                              a File
  DELETE /{v}/files/{id}                              -> {}
  GET    /{v}/files/{id}:download?alt=media           a generated file's bytes (what the SDK calls);
  GET    /download/{v}/files/{id}:download?alt=media  the same (what Google's REST example calls)

Every call needs the API key like the online endpoints (403 without, 400 API_KEY_INVALID for a wrong
one), except upload chunks, which carry no key (the upload URL is the credential). Before anything
else a call may be answered 503 (`batch_error_rate_503`); a create may create its job and then
lose the answer (`batch_lost_create_rate`), as a dropped connection after a commit does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, quote

from . import google_errors
from .auth import api_key
from .batch_service import BatchService
from .batch_store import InvalidPageToken
from .batch_wire import file_body, file_resource, list_body, operation_body
from .config import SimulatorConfig
from .files_store import UploadError
from .google_errors import ApiError
from .http11 import Reply
from .models import MODELS
from .parsing import object_fields, parse_json
from .stats import SimulatorStats

Headers = Sequence[tuple[bytes, bytes]]
Action = Callable[[Headers, bytes], Reply]

CHUNK_GRANULARITY = 8 * 1024 * 1024
_CREATE = re.compile(r"^/(?P<version>v1|v1beta)/models/(?P<model>[^/:]+):asyncBatchEmbedContent$")
_BATCHES = re.compile(r"^/(?P<version>v1|v1beta)/batches$")
_BATCH = re.compile(r"^/(?P<version>v1|v1beta)/batches/(?P<id>[^/:]+)(?::(?P<verb>[A-Za-z]+))?$")
_UPLOAD = re.compile(r"^/upload/(?P<version>v1|v1beta)/files$")
_FILE = re.compile(r"^/(?:download/)?(?P<version>v1|v1beta)/files/(?P<id>[^/:]+)(?::(?P<verb>[A-Za-z]+))?$")
_FILE_FIELDS = {
    "name": ("name",),
    "display_name": ("displayName", "display_name"),
    "mime_type": ("mimeType", "mime_type"),
    "size_bytes": ("sizeBytes", "size_bytes"),
}


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class BatchApi:
    def __init__(
        self,
        service: BatchService,
        config: Callable[[], SimulatorConfig],
        stats: SimulatorStats,
        base_url: Callable[[], str],
    ) -> None:
        self._service = service
        self._config = config
        self._stats = stats
        self._base_url = base_url

    def handle(self, method: str, path: str, query: str, headers: Headers, body: bytes) -> Reply | None:
        """The answer to a Batch or Files API request, or None when the path is not one of theirs."""
        route = self._route(method, path, query)
        if route is None:
            return None
        endpoint, model, action = route
        self._stats.record_call(endpoint, model)
        try:
            if endpoint != "files.upload" or "upload_id" not in parse_qs(query):
                self._authenticate(headers, query)
            config = self._config()
            if self._service.dice.chance(config.batch_error_rate_503, config):
                self._stats.record_fault("batch_503")
                raise ApiError(503, "The service is currently unavailable.")
            reply = action(headers, body)
        except UploadError as error:
            self._stats.record_status(error.code)
            return Reply(error.code, error.body(), headers=[("x-goog-upload-status", "final")])
        except ApiError as error:
            self._stats.record_status(error.code)
            return Reply(error.code, error.body())
        if not reply.drop:
            self._stats.record_status(reply.status)
        return reply

    def _authenticate(self, headers: Headers, query: str) -> None:
        key = api_key(headers, query)
        if key is None:
            raise google_errors.missing_key()
        expected = self._config().api_key
        if expected is not None and key != expected:
            raise google_errors.invalid_key()

    # ------------------------------------------------------------------ routing
    def _route(self, method: str, path: str, query: str) -> tuple[str, str | None, Action] | None:
        """(endpoint name for the stats, model, what to do) for a path of these APIs."""

        def only(
            allowed: str, endpoint: str, action: Action, model: str | None = None
        ) -> tuple[str, str | None, Action]:
            if method != allowed:
                return endpoint, model, lambda _h, _b: _refuse(google_errors.method_not_allowed(method))
            return endpoint, model, action

        if match := _CREATE.match(path):
            version, model = match["version"], match["model"]
            return only("POST", "asyncBatchEmbedContent", lambda _h, b: self._create(version, model, b), model)
        if _BATCHES.match(path):
            return only("GET", "batches.list", lambda _h, _b: self._list(query))
        if match := _BATCH.match(path):
            name, verb = f"batches/{match['id']}", match["verb"]
            if verb == "cancel":
                return only("POST", "batches.cancel", lambda _h, _b: self._cancel(name))
            if verb is not None:
                return None
            if method == "DELETE":
                return "batches.delete", None, lambda _h, _b: self._delete(name)
            return only("GET", "batches.get", lambda _h, _b: self._get(name))
        if match := _UPLOAD.match(path):
            version = match["version"]
            return only("POST", "files.upload", lambda h, b: self._upload(version, query, h, b))
        if match := _FILE.match(path):
            name, verb = f"files/{match['id']}", match["verb"]
            if verb == "download":
                return only("GET", "files.download", lambda _h, _b: self._download(name, query))
            if verb is not None or path.startswith("/download/"):
                return None
            if method == "DELETE":
                return "files.delete", None, lambda _h, _b: self._delete_file(name)
            return only("GET", "files.get", lambda _h, _b: self._file(name))
        return None

    # ------------------------------------------------------------------ batches
    def _create(self, version: str, model_name: str, body: bytes) -> Reply:
        model = MODELS.get(model_name.removeprefix("models/"))
        if model is None:
            raise google_errors.model_not_found(model_name, version, "asyncBatchEmbedContent")
        job = self._service.create(model, version, body)
        if self._service.dice.chance(self._config().batch_lost_create_rate, self._config()):
            self._stats.record_fault("batch_lost_create")
            return Reply(drop=True)
        return Reply(200, operation_body(job))

    def _get(self, name: str) -> Reply:
        return Reply(200, operation_body(self._service.job(name)))

    def _list(self, query: str) -> Reply:
        params = parse_qs(query)
        size_text = params.get("pageSize", [""])[0]
        try:
            page_size = int(size_text) if size_text else None
        except ValueError:
            raise google_errors.field_violation(
                "page_size", f"Invalid value at 'page_size' (TYPE_INT32), \"{size_text}\""
            ) from None
        try:
            jobs, token = self._service.page(page_size, params.get("pageToken", [""])[0] or None)
        except InvalidPageToken:
            raise google_errors.bad_request("Invalid page token.") from None
        return Reply(200, list_body(jobs, token))

    def _cancel(self, name: str) -> Reply:
        self._service.cancel(name)
        return Reply(200, b"{}")

    def _delete(self, name: str) -> Reply:
        self._service.delete(name)
        return Reply(200, b"{}")

    # ------------------------------------------------------------------ files
    def _upload(self, version: str, query: str, headers: Headers, body: bytes) -> Reply:
        upload_id = parse_qs(query).get("upload_id", [""])[0]
        if upload_id:
            return self._upload_chunk(upload_id, headers, body)
        if (_header(headers, b"x-goog-upload-protocol") or "").lower() != "resumable" or (
            _header(headers, b"x-goog-upload-command") or ""
        ).lower() != "start":
            raise google_errors.bad_request(
                "Only resumable uploads are supported: send X-Goog-Upload-Protocol: resumable and "
                "X-Goog-Upload-Command: start."
            )
        size_text = _header(headers, b"x-goog-upload-header-content-length")
        if size_text is None or not size_text.isdigit():
            raise google_errors.bad_request("X-Goog-Upload-Header-Content-Length must give the file size in bytes.")
        fields: dict[str, Any] = {}
        if body.strip():
            data = object_fields(parse_json(body), "", {"file": ("file",)}, "CreateFileRequest")
            fields = object_fields(data.get("file", {}), "file", _FILE_FIELDS, "File")
        name = fields.get("name")
        if name is not None and not str(name).startswith("files/"):
            name = f"files/{name}"
        mime_type = (
            _header(headers, b"x-goog-upload-header-content-type")
            or fields.get("mime_type")
            or "application/octet-stream"
        )
        upload = self._service.start_upload(name, fields.get("display_name"), str(mime_type), int(size_text))
        url = f"{self._base_url()}/upload/{version}/files?upload_id={quote(upload.upload_id)}&upload_protocol=resumable"
        return Reply(
            200,
            b"",
            content_type="text/plain; charset=utf-8",
            headers=[
                ("x-goog-upload-status", "active"),
                ("x-goog-upload-url", url),
                ("x-goog-upload-control-url", url),
                ("x-goog-upload-chunk-granularity", str(CHUNK_GRANULARITY)),
            ],
        )

    def _upload_chunk(self, upload_id: str, headers: Headers, body: bytes) -> Reply:
        command = {part.strip().lower() for part in (_header(headers, b"x-goog-upload-command") or "").split(",")}
        offset_text = _header(headers, b"x-goog-upload-offset") or "0"
        if not command & {"upload", "finalize"} or not offset_text.isdigit():
            raise UploadError(
                400, "X-Goog-Upload-Command must be upload and/or finalize, with an X-Goog-Upload-Offset."
            )
        stored = self._service.append_upload(upload_id, int(offset_text), body, "finalize" in command)
        if stored is None:
            return Reply(
                200, b"", content_type="text/plain; charset=utf-8", headers=[("x-goog-upload-status", "active")]
            )
        payload = {"file": file_resource(stored, self._base_url())}
        return Reply(200, _json(payload), headers=[("x-goog-upload-status", "final")])

    def _file(self, name: str) -> Reply:
        return Reply(200, file_body(self._service.file(name), self._base_url()))

    def _delete_file(self, name: str) -> Reply:
        self._service.delete_file(name)
        return Reply(200, b"{}")

    def _download(self, name: str, query: str) -> Reply:
        if parse_qs(query).get("alt", [""])[0] != "media":
            return self._file(name)
        stored = self._service.download(name)
        return Reply(200, stored.data, content_type=stored.mime_type)


def _refuse(error: ApiError) -> Reply:
    raise error
