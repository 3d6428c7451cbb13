# K2's image for deploy/compose.yaml and deploy/k8s: the `k2` command with the production extra (PostgreSQL driver,
# DuckDB's httpfs for S3), nothing else. Build: docker build -t k2 .
FROM python:3.11-slim
WORKDIR /opt/k2
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[production]'
ENV K2_HOME=/data K2_API_HOST=0.0.0.0 K2_METRICS_HOST=0.0.0.0
VOLUME ["/data"]
ENTRYPOINT ["k2"]
