#!/usr/bin/env python3
"""Repair the embeddings: report by document, reset what is wrong, embed what is missing (batch-aware).

    python fix_missing_embeddings.py --dry-run          # report what would be done; nothing changes
    python fix_missing_embeddings.py                    # release dead leases, reset wrong vectors, embed
    python fix_missing_embeddings.py --doc-id ID        # one document
    python fix_missing_embeddings.py --limit 100 --json # at most 100, one JSON object on stdout

"Wrong" means made by another model (or an unrecorded one) than EMBEDDING_MODEL, or of another length
than EMBEDDING_DIMENSIONS. Chunks recorded as failed are left for `batch_embedding_processor.py --retry-only`.

Exit codes: 0 every selected chunk embedded, 1 some failed (or the run stopped early), 2 usage or
settings error, 130 interrupted.
"""

from modules.cli.repair import main

if __name__ == "__main__":
    raise SystemExit(main())
