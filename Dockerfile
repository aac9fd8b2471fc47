# The vote aggregator as one compiled binary (deno task compile) on a small base image, as a non-root user.
#
#   docker build -t vote-aggregator .
#   docker compose up -d          # the whole stack: see compose.yaml
#
# The binary's --allow-net is fixed at build time: the compose service names (rabbitmq, postgres),
# localhost and 127.0.0.1 on the ports below, plus the hosts given as build arguments, e.g.
#   docker build --build-arg RABBITMQ_HOST=mq.internal --build-arg POSTGRES_HOST=db.internal .
# Only hosts and ports go in: passwords stay out of the image (they are read at run time).

FROM denoland/deno:2.9.6 AS build
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY deno.json deno.lock ./
RUN deno install --frozen
COPY main.ts ./
COPY lib/ lib/
COPY sql/ sql/
COPY tools/ tools/
# Each ARG is in the environment of the RUN below, where tools/permissions.ts reads it.
ARG RABBITMQ_HOST=rabbitmq
ARG RABBITMQ_PORT=5672
ARG RABBITMQ_TLS=false
ARG RABBITMQ_CA_FILE=
ARG POSTGRES_HOST=postgres
ARG POSTGRES_PORT=5432
ARG POSTGRES_SSLROOTCERT=
ARG HTTP_HOST=0.0.0.0
ARG PROMETHEUS_PORT=8001
RUN deno task compile --output /out/vote-aggregator \
  && deno run --allow-env --allow-read=.env tools/permissions.ts --compile > /out/permissions.txt

# Debian slim rather than distroless: the binary needs glibc either way, and slim's bash lets the
# HEALTHCHECK below ask /healthz without adding curl.
FROM debian:12-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin aggregator
WORKDIR /app
COPY --from=build /out/vote-aggregator /out/permissions.txt /app/
USER 10001
ARG PROMETHEUS_PORT=8001
ENV PROMETHEUS_PORT=${PROMETHEUS_PORT}
EXPOSE ${PROMETHEUS_PORT}
# main.ts drains on SIGTERM (commits and acknowledges what is batched) within SHUTDOWN_TIMEOUT_SECONDS.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PROMETHEUS_PORT} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/app/vote-aggregator"]
