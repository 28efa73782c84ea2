# The Draw.AI API: FastAPI, ONNX Runtime and OpenVINO, no PyTorch (the core dependencies of pyproject.toml only).
#
#   docker build -f docker/api.Dockerfile -t drawai-api .
#   docker run -p 8000:8000 -v drawai-home:/data -e DRAWAI_REDIS_URL=redis://HOST:6379/0 \
#              -e DRAWAI_API_KEYS=KEY drawai-api
#
# ONNX Runtime is onnxruntime-gpu with NVIDIA's CUDA and cuDNN wheels: given a GPU (compose device
# reservation, `docker run --gpus 1`), DRAWAI_ONNX_PROVIDER=auto serves on CUDA; without one it serves on
# the CPU. A smaller CPU-only image: --build-arg ONNXRUNTIME=onnxruntime
#
# `drawai api` runs uvicorn with DRAWAI_API_WORKERS processes (their metrics merged through
# prometheus_client's multiprocess files in DRAWAI_METRICS_DIR). It refuses to listen on 0.0.0.0
# unless DRAWAI_API_KEYS is set (or DRAWAI_ALLOW_ANONYMOUS=true, on purpose).
# tests/test_deploy.py runs this image's CMD natively with these ENV values and probes the HEALTHCHECK URL.
FROM python:3.11-slim

ARG ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    DRAWAI_HOME=/data \
    DRAWAI_API_WORKERS=2 \
    DRAWAI_METRICS_DIR=/tmp/drawai-metrics

# The same uid as the worker image: both write the shared store volume.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/drawai --shell /usr/sbin/nologin drawai \
    && mkdir -p /data \
    && chown drawai:drawai /data

WORKDIR /app

# Dependencies first (a cached layer while only the code changes): pyproject's core dependencies,
# with onnxruntime replaced by $ONNXRUNTIME (same `onnxruntime` module, same version floor). NVIDIA's
# wheels put the CUDA/cuDNN libraries under site-packages/nvidia: ldconfig makes the loader find them.
COPY pyproject.toml README.md ./
RUN python -c "import re, sys, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(re.sub(r'^onnxruntime(?![\w.-])', sys.argv[1], d) for d in deps))" "$ONNXRUNTIME" > /tmp/requirements.txt \
    && cat /tmp/requirements.txt \
    && pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && if [ -d "$site/nvidia" ]; then \
         find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u > /etc/ld.so.conf.d/zz-nvidia-wheels.conf \
         && ldconfig; \
       fi

COPY models ./models
COPY service ./service
COPY worker ./worker
COPY drawai ./drawai
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && rm -rf build *.egg-info \
    && python -c "import onnxruntime, service.main; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
    && python -c "import openvino as ov; print('openvino', ov.__version__, ov.Core().available_devices)" \
    && if python -c "import torch" 2>/dev/null; then echo "PyTorch must not be in the API image" >&2; exit 1; fi

USER drawai
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["drawai", "api", "--host", "0.0.0.0", "--port", "8000"]
