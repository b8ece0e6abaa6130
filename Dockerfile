# Gateway image: the same package the README installs, run with `gateway run` (which migrates
# the database first). uid/gid 10001 is fixed so that Asterisk's container can run as the same
# user on the shared voice volume (docker-compose.yml).
FROM python:3.11.15-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY smpp ./smpp
COPY actions_dsl ./actions_dsl
COPY config ./config
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock \
 && pip install --no-cache-dir --no-deps . \
 && pip check \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --home /app gateway \
 && mkdir -p /app/var /var/lib/gateway-voice \
 && chown gateway:gateway /app/var /var/lib/gateway-voice
ENV GATEWAY_DATA_DIR=/app/var
USER gateway
EXPOSE 8080 4573
CMD ["gateway", "run"]
