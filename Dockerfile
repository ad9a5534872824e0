# ticker_worker's image: one image for every process (holder, workers, Flower, simulator,
# migrations); docker-compose.yml picks the command. Secrets come from the environment at run
# time, never from the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# What `pip install .` needs, then what the commands read at run time: the Alembic migrations
# (`ticker-worker db upgrade`) and celeryconfig.py (`celery -A ticker_worker`).
COPY pyproject.toml README.md ./
COPY ticker_worker ./ticker_worker
COPY migrations ./migrations
COPY alembic.ini celeryconfig.py ./
RUN pip install .

# ticker_worker.db.migrate finds the migrations next to the package's source tree, so the code
# runs from /app (not from the installed copy in site-packages).
ENV PYTHONPATH=/app

RUN useradd --system --uid 10001 --no-create-home --home-dir /app ticker
USER ticker

# holder /health and /metrics, Flower, simulator
EXPOSE 8080 5555 8765

CMD ["ticker-worker", "--help"]
