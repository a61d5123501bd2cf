"""Knowledge-base documents: the upload API (api.py, auth.py, body.py, service.py), reading uploads in a
worker process within limits (isolation.py, worker.py, prepare.py, extract.py, docx_text.py, decoding.py),
saving them by name (ingest.py), and Japanese-aware chunking (chunking.py)."""
