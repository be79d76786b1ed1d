# One image for every Driftline process: the five services (`python -m services.<name>`)
# and the topic initialiser (`python -m shared.topics`); compose.yaml picks the command.
# PYTHON_IMAGE: the base, official by default; a registry mirror or a stand-in built
# from Debian packages (`make compose-test` on a machine with no registry) may replace it.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# PYTHONPATH: the source tree in /app wins over the installed copy, so code that
# finds its data next to the packages (schemas/, pipelines/) sees it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# Exactly the pinned dependencies, first, so code changes reuse this layer.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY services/ services/
COPY schemas/ schemas/
COPY pipelines/ pipelines/
# The project itself (packages + the `driftline` console script); its dependencies
# are already pinned above.
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

# Run as an unprivileged user. The code stays root-owned (read-only to it); /app
# itself is writable for the working data a service keeps (e.g. faust's table dir).
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home driftline \
    && chown driftline:driftline /app
USER driftline

EXPOSE 8000 8001 8002 8003 6066

CMD ["python", "-m", "services.ingestion"]
