# The API image: the base install only (no torch, no TransformerLens).
FROM python:3.11.10-slim-bookworm
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENV CIRCUITREG_API_HOST=0.0.0.0
EXPOSE 8000
CMD ["circuitreg", "serve"]
