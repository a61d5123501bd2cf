#!/usr/bin/env python3
"""Embed pending chunks in batches, or show the queue's status.

    python batch_embedding_processor.py                 # every pending chunk
    python batch_embedding_processor.py --limit 100     # at most 100
    python batch_embedding_processor.py --doc-id ID     # one document
    python batch_embedding_processor.py --retry-only    # only chunks recorded as failed
    python batch_embedding_processor.py --status [--json] [--by-document] [--errors]

Exit codes: 0 every selected chunk embedded, 1 some failed (or the run stopped early), 2 usage or
settings error, 130 interrupted.
"""

from modules.cli.processor import main

if __name__ == "__main__":
    raise SystemExit(main())
