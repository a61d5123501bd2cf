"""The errors that cross layer boundaries. Adapters translate their library's exceptions into these;
the orchestrator decides policy from the class alone, never from HTTP codes or SDK types."""

from __future__ import annotations


class BatchEmbeddingError(Exception):
    """Base of every error this package raises on purpose."""


# --- Embedding API -------------------------------------------------------------------------------


class EmbeddingError(BatchEmbeddingError):
    """A call to the embedding API did not give usable vectors for a batch."""


class RateLimitedError(EmbeddingError):
    """HTTP 429: the quota is spent for now. Never the chunks' fault: pause all senders, retry whole."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        quota_kind: str | None = None,
        quota_limit: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.quota_kind = quota_kind  # "requests" or "tokens", when the server named the quota
        self.quota_limit = quota_limit


class TransientEmbeddingError(EmbeddingError):
    """5xx, timeouts, dropped connections, malformed or inconsistent answers: worth retrying as is."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        # The server answered with an error before doing the work (500/502/503): taken as not charged
        # to the quota. A timeout, a dropped connection or a broken answer may have been.
        self.refused = refused


class PermanentEmbeddingError(EmbeddingError):
    """A 4xx about the request's content (HTTP 400): retrying the same batch won't help; split it."""


class ProviderConfigError(EmbeddingError):
    """Wrong key, no permission, unknown model: a run-level error, never charged to chunks."""


# --- Database ------------------------------------------------------------------------------------


class StoreError(BatchEmbeddingError):
    """The chunk store failed in a way the run cannot carry on from."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached (down, wrong address, refused)."""


class SchemaMismatchError(StoreError):
    """The database schema does not fit the settings (e.g. vector dimension, missing table)."""


class UnknownDocumentError(BatchEmbeddingError):
    """A document id that is not in the documents table."""

    def __init__(self, doc_id: str) -> None:
        super().__init__(f"document {doc_id!r} was not found")
        self.doc_id = doc_id


class RunAborted(BatchEmbeddingError):
    """The run stopped early for a reason that is not any chunk's fault (quota, config, shutdown)."""
