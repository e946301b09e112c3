"""The service's settings: the indexer's ``Settings`` (data directory, catalog, checkpoint, device) plus
what only the server needs. One object, read from ``TVR_*`` environment variables and ``.env``."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from indexer.settings import Settings

log = logging.getLogger(__name__)

MIN_API_KEY_CHARS = 16


class ServiceSettings(Settings):
    """Everything ``tvr serve`` reads; every field also comes from ``TVR_<NAME>``."""

    api_key: SecretStr | None = None
    """``X-API-Key`` value that admin routes require; unset (or empty) disables the admin routes."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    result_window: int = Field(1000, ge=100, le=100_000)
    """Nearest clips fetched per query: ``total``, pagination and ``group_by`` work within them."""
    batch_size: int = Field(16, ge=1, le=256)
    """Most queries encoded together in one call of the text encoder."""
    batch_wait_ms: float = Field(0.0, ge=0.0, le=1000.0)
    """How long the first query of a batch waits for others to join it. None by default: while a batch is
    being answered the next requests queue up anyway, and a lone query should not wait."""
    nprobe: int | None = Field(None, ge=1)
    """IVF lists a search visits unless the request says (default: what the published index recommends)."""
    ef_search: int | None = Field(None, ge=1)
    """HNSW search depth unless the request says (default: what the published index recommends)."""
    cache_size: int = Field(4096, ge=0)
    """Query embeddings kept in an LRU cache (0 turns the cache off)."""
    threads: int | None = Field(None, ge=1)
    """OpenMP threads of the text encoder (torch) and of FAISS (default: the libraries' own, one per core)."""
    text_dtype: Literal["auto", "float32", "bfloat16", "int8"] = "auto"
    """Precision of the query encoder. ``auto`` (the default): int8 on the CPU, float32 on a GPU.
    float32 is exact; bfloat16 is about 2x faster on CPUs with bf16 instructions; int8 (CPU only) about 3x:
    top-10 results agree with float32's at about 99 % on the demo model (docs/BENCHMARKS.md). int8 scales
    activations per batch, so a query's embedding varies slightly with the queries encoded beside it (the
    query cache then answers repeats with the first embedding)."""

    @property
    def query_precision(self) -> Literal["float32", "bfloat16", "int8"]:
        """``text_dtype`` with ``auto`` resolved for ``device``."""
        if self.text_dtype != "auto":
            return self.text_dtype
        return "int8" if self.device == "cpu" else "float32"

    log_format: Literal["json", "text"] = "json"

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(f"TVR_API_KEY must be at least {MIN_API_KEY_CHARS} characters (a random token)")
        return value

    @property
    def admin_enabled(self) -> bool:
        return self.api_key is not None
