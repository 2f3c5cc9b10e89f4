# Orderbook host image. Build from the repository root:
#   docker build -f infra/docker/orderbook.Dockerfile -t em-orderbook .
# Runs as uid/gid 1000, the owner the EFS access point gives the WAL folder.
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml ./
COPY emlib ./emlib
COPY functions ./functions
COPY orderbook_host ./orderbook_host
COPY playwright_runner ./playwright_runner
COPY devstack ./devstack
RUN pip install --no-cache-dir .
USER 1000:1000
EXPOSE 8101
# Listens on ORDERBOOK_URL's host and port (the task sets http://0.0.0.0:8101).
CMD ["python", "-m", "orderbook_host"]
