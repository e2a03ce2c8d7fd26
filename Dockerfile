# The tracker server: REST API + web UI under gunicorn (process workers: h5py holds a global lock).
FROM python:3.11-slim

WORKDIR /app
# setup.py's C stats kernel is optional: the slim image has no compiler and the server trains
# nothing, so it installs without it.
COPY constraints.txt pyproject.toml setup.py README.md ./
COPY tracker ./tracker
COPY api ./api
COPY web ./web
COPY migrations ./migrations

# The CPU build of torch first and pinned, so nothing pulls the multi-GB CUDA build.
RUN pip install --no-cache-dir -c constraints.txt torch==2.13.0 \
        --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -c constraints.txt '.[postgres,server,s3]'

# A folder store by default; docker-compose.yml sets an s3:// store (MinIO) and PostgreSQL.
ENV TRACKER_STORE=/data TRACKER_CACHE_DIR=/cache
VOLUME ["/data", "/cache"]
EXPOSE 5000
# gunicorn with process workers and no --preload (each worker opens its own HDF5 handles after
# the fork), serving web:create_app(); see `tracker server --help`.
CMD ["tracker", "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "4"]
