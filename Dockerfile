# The tracker server: REST API + web UI under gunicorn (process workers: h5py holds a global lock).
FROM python:3.11-slim

WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY tracker ./tracker
COPY api ./api
COPY web ./web
COPY migrations ./migrations

# The CPU build of torch first and pinned, so nothing pulls the multi-GB CUDA build.
RUN pip install --no-cache-dir -c constraints.txt torch==2.13.0 \
        --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -c constraints.txt '.[postgres,server]'

ENV TRACKER_STORE=/data
VOLUME ["/data"]
EXPOSE 5000
# No --preload: each worker opens its own HDF5 handles after the fork.
CMD ["gunicorn", "--workers", "2", "--bind", "0.0.0.0:5000", "--access-logfile", "-", "web:create_app()"]
