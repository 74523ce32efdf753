# h2ws-proxy container image: the proxy alone, non-root, with a health check.
#   docker build -t h2ws-proxy .
#   docker run --rm -p 8080:8080 -p 9901:9901 h2ws-proxy --config /etc/h2ws-proxy/proxy.toml --demo-backend
# The default config is config/container.toml (0.0.0.0:8080 to the app on 127.0.0.1:9000,
# admin on 0.0.0.0:9901); mount your own over it:
#   docker run -v "$PWD/proxy.toml:/etc/h2ws-proxy/proxy.toml:ro" -p 8080:8080 --stop-timeout 20 h2ws-proxy
# SIGTERM drains for up to limits.graceful_timeout_s (10 s by default), which is Docker's
# default stop timeout too: give `docker stop -t` / `docker run --stop-timeout` more.
# Everything this file runs is tested without Docker (tests/test_container.py).

# The base image by tag and digest (linux/amd64 and arm64 index): rebuilds are repeatable.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# Exact versions (requirements-container.txt), installed without resolving anything else;
# the build backend (pyproject.toml's [build-system]) only in this stage.
COPY requirements-container.txt ./
RUN pip install --no-cache-dir "setuptools==84.2.1" \
 && pip install --no-cache-dir --no-deps --prefix=/install -r requirements-container.txt
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir --no-deps --no-build-isolation --prefix=/install .

FROM ${PYTHON_IMAGE}
COPY --from=build /install /usr/local
RUN python -m pip check \
 && useradd --system --no-create-home --uid 10001 --user-group h2ws
COPY config/container.toml /etc/h2ws-proxy/proxy.toml
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080 9901
# The drain (see the README, "Running it"); a second signal stops at once.
STOPSIGNAL SIGTERM
# GET /healthz on the admin port (Python's standard library only, no curl in the image).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["h2ws-proxy", "healthcheck", "--admin", "127.0.0.1:9901"]
ENTRYPOINT ["h2ws-proxy"]
CMD ["--config", "/etc/h2ws-proxy/proxy.toml"]
