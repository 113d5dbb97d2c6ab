# segment-worker image: one image, the command picks the role (run | api | migrate | reconcile …).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Wheels for the project and every dependency, so the runtime stage needs no compiler or cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin segment-worker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels segment-worker \
    && rm -rf /wheels
USER 10001
# 8080: API (`api`), 9100: worker metrics (`run --metrics-port 9100`)
EXPOSE 8080 9100
ENTRYPOINT ["segment-worker"]
CMD ["run", "--metrics-port", "9100"]
