# syntax=docker/dockerfile:1
# The Codebook sidecar image: `codebook serve` (OTLP in on 4317/4318, /metrics on 9464).
#
#   docker build -t codebook-exporter:0.1.0 .
#   docker run --rm --read-only -p 4317:4317 -p 4318:4318 -p 9464:9464 codebook-exporter:0.1.0
#
# Stage 1 builds the wheel with its C extensions (exporter._wire, exporter._hot) and the
# wheels of every dependency; the build fails if the extensions did not compile. Stage 2 is a
# slim Python that installs only those wheels (no compiler, no pip cache) and runs as the
# unprivileged UID/GID 65532. Nothing is written to the root filesystem at run time (no
# bytecode, no home), so `--read-only` / readOnlyRootFilesystem works; the persistent forward
# queue needs a writable volume at /var/lib/codebook (set forward.queue_dir).
# The config is /etc/codebook/config.yaml (deploy/image/config.yaml): mount your own there.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-bookworm AS builder
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY exporter ./exporter
COPY mappings ./mappings
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/codebook_exporter-*.whl')[0]).namelist(); missing = [m for m in ('exporter/_wire', 'exporter/_hot') if not any(n.startswith(m) and n.endswith('.so') for n in names)]; sys.exit(f'C extensions not built: {missing}' if missing else 0)" \
    && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/codebook_exporter-*.whl

FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/codebook_exporter-*.whl \
    && install -d -o 65532 -g 65532 -m 0700 /var/lib/codebook
COPY deploy/image/config.yaml /etc/codebook/config.yaml
USER 65532:65532
WORKDIR /var/lib/codebook
# OTLP/gRPC, OTLP/HTTP, /metrics + /healthz + /readyz. The optional webhook listener
# (webhooks.endpoint, off by default) uses the port its config names: publish it yourself.
EXPOSE 4317 4318 9464
ENTRYPOINT ["codebook"]
CMD ["serve", "--config", "/etc/codebook/config.yaml"]
