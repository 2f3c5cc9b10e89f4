# Playwright runner image. Build from the repository root:
#   docker build -f infra/docker/runner.Dockerfile -t em-runner .
# Debian's chromium is used directly (Playwright's browser downloads are not needed).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-liberation \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml ./
COPY emlib ./emlib
COPY functions ./functions
COPY orderbook_host ./orderbook_host
COPY playwright_runner ./playwright_runner
COPY devstack ./devstack
RUN pip install --no-cache-dir .
USER 1000:1000
ENV CHROMIUM_PATH=/usr/bin/chromium
EXPOSE 8102
CMD ["python", "-m", "playwright_runner", "--host", "0.0.0.0"]
