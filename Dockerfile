# One image, two entrypoints:
#   docker run IMAGE serve --upstream http://tei:80           (the batching proxy; the default)
#   docker run --entrypoint embedding-proxy-operator IMAGE --all-namespaces
# Kubernetes sets `command` to either; the chart and the operator do.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Pinned dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
COPY operator ./operator
RUN pip install --no-deps .

FROM python:3.11-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="embedding-proxy" \
      org.opencontainers.image.description="A batching sidecar for text-embeddings-inference, and its Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# The API, and /metrics with it unless server.metrics_port is set (the operator sets 9464 and
# declares that port on the sidecar itself).
EXPOSE 8000
# The proxy drains on SIGTERM; exec form makes it PID 1 so the signal reaches it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["embedding-proxy"]
CMD ["serve"]
