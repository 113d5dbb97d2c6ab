# segment-worker image: one image, the command picks the role (run | api | migrate | reconcile …).
#
# Builds alike for linux/amd64 and linux/arm64 (`docker buildx build --platform
# linux/amd64,linux/arm64 .`): every dependency comes from a binary wheel (--only-binary=:all:),
# nothing is compiled. Checked with `pip download --only-binary=:all: --python-version 3.11
# --platform manylinux2014_{x86_64,aarch64}`: the dependencies with C code (aiokafka, asyncpg,
# hiredis, orjson, murmurhash2, pydantic-core) all have cp311 manylinux wheels for both.
# The embedded servers (the `embedded` extra) are not installed: the image is the service alone.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# 1. Wheels of the dependencies, from pyproject.toml alone: this layer is rebuilt only when
#    pyproject.toml changes, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip wheel --only-binary=:all: --wheel-dir /wheels/deps -r requirements.txt
# 2. The project's own wheel (pure Python), without its dependencies.
COPY README.md ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels/app .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin segment-worker
# Dependencies first, in a layer of their own (cached while pyproject.toml is unchanged) …
COPY --from=build /wheels/deps /wheels/deps
RUN pip install --no-cache-dir --no-index /wheels/deps/*.whl \
    && rm -rf /wheels/deps
# … then the code.
COPY --from=build /wheels/app /wheels/app
RUN pip install --no-cache-dir --no-index --no-deps /wheels/app/*.whl \
    && rm -rf /wheels/app
USER 10001
# 8080: API (`api`), 9100: worker metrics (`run --metrics-port 9100`)
EXPOSE 8080 9100
ENTRYPOINT ["segment-worker"]
CMD ["run", "--metrics-port", "9100"]
