# A Draw.AI training worker: PyTorch with CUDA, the `train` extra, `drawai worker` on the Redis queue.
#
#   docker build -f docker/worker.Dockerfile -t drawai-worker .
#   docker run --gpus '"device=0"' -v drawai-home:/data -e DRAWAI_REDIS_URL=redis://HOST:6379/0 drawai-worker
#
# One worker per GPU: each container trains one job at a time on the GPU it is given. For N GPUs run N
# containers, each pinned to its own device (compose: `device_ids: ["1"]`, see docker-compose.yml); they
# share Redis and the store volume. DRAWAI_DEVICE=auto trains on CUDA when the container has a GPU.
#
# PyTorch: torch==2.13.0 from PyPI, whose Linux wheel is the CUDA 13.0 build with NVIDIA's CUDA/cuDNN
# wheels (the host needs an NVIDIA driver recent enough for CUDA 13.0, and the NVIDIA Container Toolkit).
# TORCH_INDEX_URL picks another build of the same version from PyTorch's index, e.g. the CPU one
# (docker-compose.cpu.yml): --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#
# The worker serves /metrics and /healthz on DRAWAI_WORKER_METRICS_PORT (Prometheus scrapes it; the
# HEALTHCHECK probes it: change both if you change the port).
# tests/test_deploy.py runs this image's CMD natively with these ENV values and probes the HEALTHCHECK URL.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    MPLBACKEND=Agg \
    DRAWAI_HOME=/data \
    DRAWAI_WORKER_METRICS_PORT=9100 \
    DRAWAI_WORKER_METRICS_HOST=0.0.0.0

# The same uid as the API image: both write the shared store volume.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/drawai --shell /usr/sbin/nologin drawai \
    && mkdir -p /data \
    && chown drawai:drawai /data

WORKDIR /app

# PyTorch first and pinned (the largest layer, cached across code changes), then pyproject's core
# dependencies and the `train` extra (its torch==2.13.0 is already satisfied).
RUN pip install --no-cache-dir --disable-pip-version-check --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['train']))" > /tmp/requirements.txt \
    && cat /tmp/requirements.txt \
    && pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY models ./models
COPY service ./service
COPY worker ./worker
COPY drawai ./drawai
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && rm -rf build *.egg-info \
    && python -c "import torch, worker.main, models.gan.training; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

USER drawai
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4)"]
CMD ["drawai", "worker"]
