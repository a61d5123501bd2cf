#!/usr/bin/env python3
"""Load the bundled Japanese sample documents (samples/) as an upload would: chunk them and save them
with no embedding, ready for `python batch_embedding_processor.py`. Documents already loaded (same
name) are skipped, so running it twice changes nothing.

    python load_samples.py [FOLDER]
"""

from modules.cli.samples import main

if __name__ == "__main__":
    raise SystemExit(main())
