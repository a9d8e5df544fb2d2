# ledgerd container image: one image for the testnet init job and every validator node.
#
# Two ways to build it, same Dockerfile:
#   with a registry:  docker compose build            (FROM python:3.11-slim, deps from PyPI)
#   offline:          ./scripts/docker-build          (a local Debian base made with mmdebstrap,
#                     deps from the host-downloaded wheelhouse .docker-build/wheels, no network)
# Only classic Dockerfile instructions are used, so the legacy builder and BuildKit both work.

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS deps
# The label lets scripts/docker-build prune this project's superseded images and nothing else.
LABEL dev.ledgerd.image="stage"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
# A venv, because Debian's own python3 is "externally managed" and refuses a system-wide pip install.
RUN python3 -m venv /opt/ledgerd
WORKDIR /build
# The wheelhouse is optional. The [s] glob may match nothing, which COPY accepts as long as another
# source (pyproject.toml) exists, so one Dockerfile serves the online and the offline build.
COPY pyproject.toml .docker-build/wheel[s] /build/wheelhouse/
# Dependencies and the build backend, from pyproject.toml alone, so that a source change does not
# reinstall them. The wheelhouse is trusted only while it was made for this pyproject.toml.
RUN set -eu; cd /build/wheelhouse; \
    if [ -f pyproject.sha256 ] && [ "$(sha256sum pyproject.toml | cut -d' ' -f1)" = "$(cat pyproject.sha256)" ]; then \
        echo "ledgerd: installing from the local wheelhouse, no network"; \
        echo "--no-index --find-links /build/wheelhouse" > /build/pip-source; \
    else \
        if [ -f pyproject.sha256 ]; then echo "ledgerd: the wheelhouse is stale, ignoring it"; fi; \
        echo "ledgerd: installing from the package index"; \
        : > /build/pip-source; \
    fi; \
    /opt/ledgerd/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' > /build/requirements.txt; \
    /opt/ledgerd/bin/pip install $(cat /build/pip-source) -r /build/requirements.txt

# What the runtime image gets of the venv: the dependencies without pip, setuptools and wheel.
FROM deps AS runtime-deps
RUN /opt/ledgerd/bin/pip uninstall --yes --quiet pip setuptools wheel

FROM deps AS build
# One COPY of the whole (.dockerignore-filtered) context: each COPY costs a layer commit, and
# setuptools picks the packages named in pyproject.toml out of it.
COPY . /build/src/
# The build backend is already in the venv: no isolated build environment, no network. The project's
# own installed files (per its RECORD) go to /export at their final paths, so the runtime image adds
# them as a small layer on top of the unchanged dependency layer.
RUN /opt/ledgerd/bin/pip install --no-index --no-deps --no-build-isolation /build/src \
    && /opt/ledgerd/bin/python -c "import ledger, consensus, storage, p2p, node, cli" \
    && /opt/ledgerd/bin/python /build/src/docker/export_dist.py ledgerd /export

FROM ${BASE_IMAGE}
LABEL dev.ledgerd.image="runtime"
ENV PATH=/opt/ledgerd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8
WORKDIR /data
# The entrypoint knows `init`, `node NAME` and `healthcheck`; any other command runs as given,
# e.g. `docker run --rm ledgerd:local ledgerd --help`.
ENTRYPOINT ["/opt/ledgerd/bin/python", "/opt/ledgerd/docker/entrypoint.py"]
CMD ["ledgerd", "--help"]
# Slowest-changing first: dependencies, then the entrypoint, then the project itself.
COPY --from=runtime-deps /opt/ledgerd /opt/ledgerd
COPY docker/entrypoint.py /opt/ledgerd/docker/entrypoint.py
COPY --from=build /export/ /
