# PruneKit service image: the API (`prunekit serve`) and, with another command, the Celery worker
# (`prunekit worker`).  CPU-only PyTorch keeps the image ~1 GB smaller than the default CUDA wheels.
# /data holds the scratch space, plus uploads and artifacts unless PRUNEKIT_STORAGE_URL names an
# S3 bucket (the service extra brings boto3 for it; see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PRUNEKIT_DATA_DIR=/data

# torch first, from the CPU index, in its own layer: it is by far the largest and changes least.
RUN pip install torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY prunekit ./prunekit
COPY service ./service
COPY worker ./worker
# torch is already satisfied, so this only adds the project, its service dependencies and the
# libraries behind architectures by name (timm:, hf:; torchvision: came with torch).
RUN pip install ".[service,postgres,vision,hf]" \
    && useradd --system --create-home --uid 10001 --user-group prunekit \
    && mkdir -p /data \
    && chown prunekit:prunekit /data

USER prunekit
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Embedded mode unless PRUNEKIT_BROKER_URL is set.  Set PRUNEKIT_API_KEYS: without keys only
# requests from inside the container (loopback) are served.
CMD ["prunekit", "serve", "--host", "0.0.0.0", "--port", "8000"]
