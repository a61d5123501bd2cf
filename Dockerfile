# The watcher (default) or the knowledge app, in a container. Docker is not needed to use the project: this is
# one way to run it. Point it at your database with DATABASE_URL (or SUPABASE_URL + SUPABASE_KEY) and give
# GOOGLE_API_KEY; the embedded PostgreSQL is for trying things out, not for containers.
#   docker build -t batch-embedding .
#   docker run --rm --env-file .env batch-embedding                                   # the watcher
#   docker run --rm --env-file .env -p 8000:8000 batch-embedding \
#       uvicorn modules.knowledge.api:app --host 0.0.0.0 --port 8000                   # the app, /dashboard
FROM python:3.11-slim

WORKDIR /app
RUN useradd --create-home --uid 10001 embq
COPY pyproject.toml README.md ./
COPY modules ./modules
COPY batch_embedding_processor.py fix_missing_embeddings.py test_batch_embedding.py load_samples.py ./
RUN pip install --no-cache-dir . && chown -R embq /app

USER embq
ENV PYTHONUNBUFFERED=1
# docker stop sends SIGTERM: the watcher's normal end (exit 0); give it time to release what it holds.
STOPSIGNAL SIGTERM
CMD ["python", "batch_embedding_processor.py", "--watch"]
