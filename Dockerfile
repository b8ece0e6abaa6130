# Gateway image: the same package the README installs, run with `gateway run`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY gateway ./gateway
COPY smpp ./smpp
COPY actions_dsl ./actions_dsl
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --home /app gateway && mkdir -p /app/var && chown gateway /app/var
USER gateway
EXPOSE 8080
CMD ["gateway", "run"]
