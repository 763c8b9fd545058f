FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
COPY shard_manager ./shard_manager
COPY config ./config
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8000
CMD ["uvicorn", "--factory", "router.app:create_app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
