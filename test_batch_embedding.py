#!/usr/bin/env python3
"""System test for a configured environment (the guide's `python test_batch_embedding.py`).

Checks, each printed as a ✅ / ❌ line with the fix for every ❌: the settings load, the database
answers, the schema and vector dimension fit EMBEDDING_DIMENSIONS, the embedding API embeds one tiny
text at the right dimension, and the status counts can be read. Nothing secret is printed.

Exit codes: 0 every check passed, 1 some check failed, 2 the settings cannot even be loaded.
"""

from modules.cli.selftest import main

if __name__ == "__main__":
    raise SystemExit(main())
