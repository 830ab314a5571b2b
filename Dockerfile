# fluxsupport operator image.
#
# Build:  docker build -t <registry>/fluxsupport:0.1.0 .
#         make image   (no Docker: buildah on a base made from Debian packages; docs/install.md)
# Stage 1 installs the package and its pinned dependencies (constraints.txt) into a virtual
# environment; stage 2 copies only that environment onto a clean slim image: no pip, no pip
# cache, no build tools, no compilers (every dependency ships manylinux wheels, so none are
# needed). tests/packaging/test_dockerfile.py replays the RUN lines in a fresh venv;
# tests/packaging/test_image.py runs the image that `make image` builds.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The final stage's base: the same image unless one without the venv module and pip's wheels,
# which only the build stage uses, is given (`make image` does).
ARG RUNTIME_IMAGE=${PYTHON_IMAGE}

FROM ${PYTHON_IMAGE} AS build
ENV VIRTUAL_ENV=/opt/fluxsupport \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator/ operator/
COPY hack/image/compile_imported.py hack/image/
# Installed without bytecode; then pip and setuptools leave the venv, and so does the kubernetes
# client's asyncio copy (kubernetes.aio, 42 MB that nothing imports). Bytecode is then written
# for exactly the modules the package imports, as unchecked-hash .pyc files that no mtime can
# make stale (hack/image/compile_imported.py says why): the operator starts without compiling
# anything, and code it never loads (most of pygments and holidays) stays source only.
RUN python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --no-compile --only-binary=:all: -c constraints.txt . \
 && "$VIRTUAL_ENV/bin/pip" uninstall --yes --quiet pip setuptools \
 && rm -r "$VIRTUAL_ENV"/lib/python3.*/site-packages/kubernetes/aio \
 && "$VIRTUAL_ENV/bin/python" hack/image/compile_imported.py \
 && "$VIRTUAL_ENV/bin/fluxsupport" --help > /dev/null

FROM ${RUNTIME_IMAGE}
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
