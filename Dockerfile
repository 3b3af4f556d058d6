# One image for the server and the workers; docker-compose.yml picks the command.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/peftlab
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY peftlab ./peftlab
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir -e .
ENV PEFTLAB_DATA_DIR=/data PEFTLAB_HOST=0.0.0.0
EXPOSE 8000
CMD ["peftlab", "serve"]
