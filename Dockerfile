# fluxsupport operator image.
#
# Build:  docker build -t <registry>/fluxsupport:0.1.0 .
# Stage 1 installs the package and its pinned dependencies (constraints.txt) into a virtual
# environment; stage 2 copies only that environment onto a clean slim image: no pip cache, no
# build tools, no compilers (every dependency ships manylinux wheels, so none are needed).
# tests/packaging/test_dockerfile.py runs these RUN lines in a fresh venv, since CI cannot build images.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV VIRTUAL_ENV=/opt/fluxsupport \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator/ operator/
RUN python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --only-binary=:all: -c constraints.txt . \
 && "$VIRTUAL_ENV/bin/fluxsupport" --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="fluxsupport" \
      org.opencontainers.image.description="Business-hours support SLAs and security-bulletin verdicts for Flux CD" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV VIRTUAL_ENV=/opt/fluxsupport \
    PATH=/opt/fluxsupport/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/fluxsupport /opt/fluxsupport
# A numeric UID/GID, so that Kubernetes can verify runAsNonRoot without /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["fluxsupport"]
CMD ["run", "--metrics-port", "8080"]
