# One image for every function and workload class: FUNCTIONS_APP names the app, ROLE (barrage's
# name for FUNCTION_TARGET) the function: homepage|processor (or the seed's manager);
# WORKLOAD_CLASS=knative (functions-framework --asgi on $PORT, 8080) | fc (FC custom container, 9000).
#   docker build -t barrage:dev .
#   docker run --rm -p 8080:8080 -e ROLE=homepage barrage:dev
FROM python:3.10-slim AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements/runtime.txt /tmp/runtime.txt
# Wheels only: no compiler in the image, and the same binaries the requirement test installs.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/runtime.txt \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.10-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FUNCTIONS_APP=functions.barrage_app \
    ROLE=homepage \
    WORKLOAD_CLASS=knative \
    BARRAGE_DB=/tmp/barrage.db
# A numeric UID, so Kubernetes' runAsNonRoot can verify it.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin barrage
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY handlers/ handlers/
COPY functions/ functions/
USER 10001
EXPOSE 8080 9000
ENTRYPOINT ["python", "-m", "functions.entrypoint"]
