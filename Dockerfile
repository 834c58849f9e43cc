# The image of every brain_tasks service in docker-compose.yml (workers, beat, flower, migrate).
FROM python:3.11-slim

# LightGBM's wheel links the OpenMP runtime, which the slim image lacks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=1 \
    BRAIN_HOME=/app/.brain \
    BRAIN_SAMPLE_DIR=/app/sample/freqtrade-testdata

WORKDIR /app
COPY pyproject.toml README.md ./
COPY brain_tasks ./brain_tasks
# The bundled sample lives outside the package: `brain-tasks demo` finds it via BRAIN_SAMPLE_DIR.
COPY sample ./sample
RUN pip install . \
    && useradd --create-home --uid 10001 brain \
    && chown brain /app

# Celery warns against running workers as root; nothing here needs it.
USER brain
CMD ["brain-tasks", "--help"]
