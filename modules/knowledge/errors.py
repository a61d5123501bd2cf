"""Why an upload was refused; nothing is stored for a refused upload. The API answers 422 for an
unreadable file, 413 for one over a limit (the message names the setting), 415 for a type it doesn't take."""

from __future__ import annotations


class UnreadableDocumentError(ValueError):
    """The file can't be read as a document (corrupt, empty, unknown encoding); nothing was stored."""


class UnsupportedTypeError(UnreadableDocumentError):
    """The file's type (by its name) is not one the upload takes."""


class DocumentTooLargeError(UnreadableDocumentError):
    """The file is over one of the upload limits; `setting` names the limit (e.g. UPLOAD_MAX_PDF_PAGES)."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting
