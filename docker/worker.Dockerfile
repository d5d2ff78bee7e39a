# The GPU worker image: CUDA runtime, torch 2.13.0 and TransformerLens through the `worker` extra.
FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir '.[worker]'
CMD ["circuitreg", "worker", "--device", "auto"]
