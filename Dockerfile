# h2ws-proxy container image: the proxy alone, configured by a mounted TOML file.
#   docker build -t h2ws-proxy .
#   docker run -v "$PWD/config:/etc/h2ws-proxy" -p 8080:8080 h2ws-proxy
# The mounted proxy.toml must bind 0.0.0.0 (or [::]) inside the container.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --no-create-home --uid 10001 h2ws
USER h2ws
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["h2ws-proxy"]
CMD ["--config", "/etc/h2ws-proxy/proxy.toml"]
