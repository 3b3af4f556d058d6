"""Settings, read from environment variables PEFTLAB_* (pydantic-settings).

Shared by the server and the workers, so it imports neither FastAPI nor torch.
"""
import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PEFTLAB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./peftlab-data"), description="Where the embedded database, broker and artifacts live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file in data_dir.")
    broker_url: str | None = Field(None, description="Celery broker URL; default: embedded filesystem transport in data_dir.")
    artifact_dir: Path | None = Field(None, description="Artifact storage; default: data_dir/artifacts. With storage_url set, a worker's working area for the run it trains.")
    storage_url: str | None = Field(None, description="s3://bucket/prefix: datasets and artifacts in an S3-compatible object store (credentials, region and endpoint from the standard AWS_* variables); default: the local directories.")
    storage_presigned_downloads: bool = Field(False, description="With storage_url: downloads answer 307 to a presigned URL of the object store instead of streaming through the server.")
    storage_presign_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600, description="How long a presigned download URL is valid.")
    storage_cache_dir: Path | None = Field(None, description="With storage_url: this host's copies of datasets and adapters read from the store; default: data_dir/cache/storage.")
    storage_cache_bytes: int = Field(20 * 1024**3, ge=0, description="With storage_url: disk for storage_cache_dir (the least recently used copies go first).")
    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, description="Port the server listens on.")
    max_upload_bytes: int = Field(2 * 1024**3, description="Largest dataset file accepted.")
    train_queue: str = Field("peftlab.train", description="Celery queue for training runs.")
    predict_queue: str = Field("peftlab.predict", description="Celery queue for predictions (short tasks, kept apart from training).")
    lease_seconds: int = Field(60, description="A running run whose worker has not heartbeated for this long is recovered.")
    heartbeat_seconds: float = Field(5.0, description="How often a worker renews its lease.")
    requeue_after_seconds: int = Field(600, description="A queued run not picked up for this long is sent to the broker again.")
    reaper_interval_seconds: float = Field(15.0, description="How often the server looks for lost runs.")
    job_lease_seconds: float = Field(30.0, gt=0, description="Server replicas: each periodic job (reaper, webhook notifier, search driver) runs on the one replica holding its lease; a replica that dies hands its jobs over after this long (at least 3 of the job's intervals).")
    pass_on_pause_seconds: float = Field(10.0, ge=0, description="A worker whose device cannot hold any queued run (memory, quantisation, GPU count) sends the message back to the queue for a larger worker, due this many seconds later (so no worker spins on it); its own task slot is free at once.")
    search_interval_seconds: float = Field(2.0, gt=0, description="How often the server tells running searches' "
                                           "eval points to Optuna, prunes, and queues their next trials.")
    max_attempts: int = Field(3, description="How often a run whose worker died is retried before it fails.")
    save_retry_seconds: float = Field(600.0, description="How long a worker whose run trained to the end keeps retrying to save the result while the database is unreachable (the write is fenced by its attempt, so a late one never overwrites a retry).")
    db_pool_size: int = Field(10, ge=1, description="Database connections each process keeps open.")
    db_max_overflow: int = Field(30, ge=0, description="Extra connections a process may open at busy times, beyond db_pool_size.")
    db_pool_timeout: float = Field(10.0, gt=0, description="How long a request waits for a free database connection before it is answered 503.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses or CIDR networks of reverse proxies whose X-Forwarded-For/-Proto headers are believed (JSON list); none by default.")
    sse_poll_seconds: float = Field(5.0, gt=0, description="Live event streams: how often a server reads a watched run even when no change was announced (the safety net for a lost announcement; announced changes arrive at once).")
    model_dirs: list[Path] = Field(default_factory=list, description="Directories admins may register local base models from (JSON list); data_dir/models is always allowed.")
    secret_key: str | None = Field(None, description="Signs task messages so workers act only on the server's; default: a random key kept in data_dir/secret_key (set the same value on every host at scale).")
    max_trainable_params: int = Field(2_000_000_000, ge=1, description="Runs that would train more parameters than this are refused at POST /api/runs (e.g. an absurd prompt-encoder size).")
    gpus: str | None = Field(None, description="Worker: the GPU indices it owns, comma-separated (CUDA_VISIBLE_DEVICES); a run with training.gpus N > 1 trains on N of them as N processes; none = auto.")
    cpu_processes: int = Field(1, ge=1, le=64, description="CPU worker: how many processes (gloo) it may run one run as, so that training.gpus N runs can be tested without GPUs (`peftlab worker --cpu-processes N`).")
    base_model_cache: Literal["cpu", "gpu", "off"] = Field("cpu", description="Worker: keep the last base model loaded (in host memory, or on the GPU) so the next run on the same base skips loading it; each run trains a fresh copy.")
    base_model_cache_max_bytes: int = Field(8 * 1024**3, ge=0, description="Worker: base models with more weight bytes than this are not kept loaded.")
    tokenized_cache_bytes: int = Field(4 * 1024**3, ge=0, description="Worker: disk space for tokenized datasets under data_dir/cache/tokenized (the least recently used go first); 0 = no cache.")
    # Dataset uploads are scanned in a child process with these caps (app/datasets/sandbox.py).
    scan_memory_bytes: int = Field(1024**3, ge=64 * 1024**2, description="Address space the upload scanner's child process may use; past it the upload is refused as too large.")
    scan_timeout_seconds: float = Field(600.0, gt=0, description="CPU and wall-clock seconds the upload scanner may take; past it the upload is refused as too slow to read.")
    scan_start_method: Literal["forkserver", "spawn"] = Field("forkserver", description="How the scanner's child starts: forked from a small preloaded server process, or a fresh interpreter.")
    scan_concurrency: int = Field(2, ge=1, description="Uploads scanned at once per server process; more wait their turn.")
    max_nesting_depth: int = Field(32, ge=1, le=200, description="Deepest nesting of JSON objects/arrays inside one dataset row.")
    max_line_bytes: int = Field(16 * 1024**2, ge=1024, description="Longest line (JSONL, CSV/TSV), CSV field or JSON array item in a dataset file.")
    max_columns: int = Field(1000, ge=1, description="Most columns a dataset may have.")
    max_column_name_chars: int = Field(256, ge=8, description="Longest column name in a dataset.")
    preview_cell_chars: int = Field(1000, ge=32, description="A dataset cell shown in previews and row pages is cut to this many characters (with a marker).")
    preview_row_chars: int = Field(32 * 1024, ge=256, description="The cells of one preview row together are cut to about this many characters.")

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        from urllib.parse import urlparse

        parsed = urlparse(value.strip())
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"{value!r} is not an object store URL: use s3://bucket or s3://bucket/prefix")
        return value.strip()

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        """Written the way uvicorn reads them: addresses, or networks with their host bits cleared."""
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)) if "/" in item
                           else str(ipaddress.ip_address(item.strip())))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network (e.g. 10.0.0.5 or 10.0.0.0/8)") from None
        return out
    public_url: str | None = Field(None, description="The server's address as users reach it, for links in webhook messages; default http://host:port.")
    webhook_poll_seconds: float = Field(5.0, description="How often the server looks for ended runs to announce to webhooks.")
    webhook_retry_seconds: float = Field(30.0, description="Wait before retrying a failed webhook delivery; doubles after each failure.")
    webhook_max_attempts: int = Field(5, description="A webhook delivery that failed this often is given up.")
    webhook_private_hosts: bool = Field(False, description="Allow webhooks to loopback, private and link-local addresses (a chat server on your own network). Off, a project owner cannot make the server send requests into its own network.")
    webhook_timeout_seconds: float = Field(10.0, description="How long a webhook receiver may take to connect, take the message and answer (each); a delivery is claimed for twice the longest send (app/notifications/service.py send_seconds).")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'peftlab.sqlite').resolve()}"

    @property
    def resolved_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_storage_cache_dir(self) -> Path:
        return (self.storage_cache_dir or self.data_dir / "cache" / "storage").resolve()

    @property
    def tokenized_cache_dir(self) -> Path:
        return (self.data_dir / "cache" / "tokenized").resolve()

    @property
    def upload_dir(self) -> Path:
        return (self.data_dir / "datasets").resolve()

    @property
    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            import os
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.data_dir / f".secret_key.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
            try:  # link() is atomic and refuses an existing name: processes starting together agree
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()

    @property
    def allowed_model_dirs(self) -> list[Path]:
        return [p.resolve() for p in [self.data_dir / "models", *self.model_dirs]]

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.resolved_artifact_dir, self.upload_dir, self.broker_dir):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
