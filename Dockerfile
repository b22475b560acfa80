# Two images from one Dockerfile, built from the locks alone (every file checked by its hash):
#   docker build --target sidecar  -t embedding-proxy:0.1.0 .           the batching proxy (default)
#   docker build --target operator -t embedding-proxy-operator:0.1.0 .  the Kubernetes operator
# The sidecar carries only the proxy's dependencies (requirements.lock); the operator adds kopf,
# the Kubernetes client, cryptography and jsonpatch (requirements-operator.lock). Neither runtime
# venv has pip or setuptools: the build's own pip installs into them from outside.

# python:3.11-slim (Python 3.11.15, Debian trixie), pinned by the digest of its multi-platform
# index; to move it, read the tag's current digest (`docker buildx imagetools inspect
# python:3.11-slim`) and replace it here.
FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff AS base

FROM base AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
WORKDIR /src
# The build's tools, pinned: pip and the build backend pyproject.toml names.
COPY requirements-build.lock ./
RUN python -m venv /opt/build \
    && /opt/build/bin/python -m pip install --require-hashes --no-deps -r requirements-build.lock
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
COPY operator ./operator
# The project's own wheel, with the pinned backend (no isolated build env fetching its own).
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM build AS sidecar-venv
COPY requirements.lock ./
RUN python -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps \
       --only-binary :all: -r requirements.lock \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps --no-index /wheels/*.whl \
    && /opt/build/bin/pip --python /opt/venv/bin/python check \
    && rm /opt/venv/bin/embedding-proxy-operator
# (The operator's command goes: its dependencies are in the operator image only.)

FROM build AS operator-venv
COPY requirements-operator.lock ./
RUN python -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps \
       --only-binary :all: -r requirements-operator.lock \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps --no-index /wheels/*.whl \
    && /opt/build/bin/pip --python /opt/venv/bin/python check

# What both images share: the user, the environment, the labels.
FROM base AS runtime
ARG VERSION=0.1.0
# The commit and the repository URL it was built from (scripts/build-images fills both from git).
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A home that exists (HOME=/home/app), owned by root: the root filesystem is read-only at run time.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --home-dir /home/app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /home/app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/home/app
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
STOPSIGNAL SIGTERM

FROM runtime AS operator
LABEL org.opencontainers.image.title="embedding-proxy-operator" \
      org.opencontainers.image.description="The Kubernetes operator that rolls out the embedding-proxy sidecar, tunes it and scales on its queue depth"
COPY --from=operator-venv /opt/venv /opt/venv
ENTRYPOINT ["embedding-proxy-operator"]
CMD ["--all-namespaces"]

# Last, so that a plain `docker build .` makes the sidecar.
FROM runtime AS sidecar
LABEL org.opencontainers.image.title="embedding-proxy" \
      org.opencontainers.image.description="A batching sidecar for text-embeddings-inference"
COPY --from=sidecar-venv /opt/venv /opt/venv
# The API, and /metrics with it unless server.metrics_port is set (the operator sets 9464 and
# declares that port on the sidecar itself).
EXPOSE 8000
# The proxy drains on SIGTERM; exec form makes it PID 1 so the signal reaches it.
ENTRYPOINT ["embedding-proxy"]
CMD ["serve"]
