"""The service's settings: the indexer's ``Settings`` (data directory, catalog, checkpoint, device) plus
what only the server needs. One object, read from ``TVR_*`` environment variables and ``.env``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from indexer.settings import Settings

log = logging.getLogger(__name__)

MIN_API_KEY_CHARS = 16


class ServiceSettings(Settings):
    """Everything ``tvr serve`` reads; every field also comes from ``TVR_<NAME>``."""

    api_key: SecretStr | None = None
    """``X-API-Key`` value that admin routes require; unset (or empty) disables the admin routes."""
    read_api_key: SecretStr | None = None
    """When set, every route but the health checks and the page itself needs this key (or the admin key) in
    the ``X-API-Key`` header or the ``tvr_key`` cookie (which the page sets, so its player can stream)."""
    media_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Folders outside which no file is ever served (``TVR_MEDIA_ROOTS``, separated like ``PATH``). Answers
    show a video's path relative to its root; with no roots, only its file name (admins see server paths)."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    result_window: int = Field(1000, ge=100, le=100_000)
    """Nearest clips fetched per query: ``total``, pagination and ``group_by`` work within them."""
    batch_size: int = Field(16, ge=1, le=256)
    """Most queries encoded together in one call of the text encoder."""
    batch_wait_ms: float = Field(0.0, ge=0.0, le=1000.0)
    """How long the first query of a batch waits for others to join it. No wait by default: while a batch is
    being answered the next requests queue up anyway, and a lone query should not wait."""
    nprobe: int | None = Field(None, ge=1)
    """IVF lists a search visits unless the request says (default: what the published index recommends)."""
    ef_search: int | None = Field(None, ge=1)
    """HNSW search depth unless the request says (default: what the published index recommends)."""
    cache_size: int = Field(4096, ge=0)
    """Query embeddings kept in an LRU cache (0 turns the cache off)."""
    search_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Longest a search request waits for its answer before it gets a 503 saying so."""
    threads: int | None = Field(None, ge=1)
    """OpenMP threads of the text encoder (torch) and of FAISS (default: the libraries' own, one per core)."""
    text_dtype: Literal["auto", "float32", "bfloat16", "int8"] = "auto"
    """Precision of the query encoder. ``auto`` (the default): int8 on the CPU, float32 on a GPU.
    float32 is exact; bfloat16 is about 2x faster on CPUs with bf16 instructions; int8 (CPU only) about 3x:
    top-10 results agree with float32's at about 99 % on the demo model (docs/BENCHMARKS.md). A query's
    embedding does not depend on the queries encoded beside it, at any precision."""
    index_sync_s: float = Field(30.0, ge=0, le=86_400)
    """Seconds between checks that the served index still holds exactly the catalog's indexed clips (one
    aggregate query); when it does not, a background job syncs this replica's index from the catalog and
    swaps it in, once the catalog is quiet (unchanged since the previous check) or the index has been behind
    for ``index_sync_max_lag_s``. 0 turns the periodic check off (start-up and ``POST /admin/reload`` still
    sync, at once)."""
    index_sync_max_lag_s: float = Field(600.0, ge=0, le=86_400)
    """Longest the served index stays behind a catalog that keeps changing (a long ingest) before the
    periodic check syncs it anyway; each sync rewrites the whole index, so not at every check. 0 syncs at
    every check that finds a difference."""
    log_format: Literal["json", "text"] = "json"
    example_max_image_bytes: int = Field(20_000_000, ge=1)
    """Largest image a search by example accepts (bytes, counted while the upload streams: 413 beyond)."""
    example_max_image_pixels: int = Field(40_000_000, ge=1)
    """Most pixels (width x height, as the image's header declares them, checked before decoding) of an
    example image: larger ones are refused with a 422 (decompression bombs)."""
    example_max_video_bytes: int = Field(100_000_000, ge=1)
    """Largest example video accepted (bytes, counted while the upload streams: 413 beyond)."""
    example_max_video_s: float = Field(60.0, gt=0, le=3600)
    """Longest example video accepted (seconds, as its container declares them): longer ones get a 422."""
    example_timeout_s: float = Field(60.0, gt=0, le=3600)
    """Longest the examples' encoding process may work on one image or video (after it has loaded the
    encoder): past it the process is killed and restarted, and the request gets a 503 saying so."""

    @property
    def query_precision(self) -> Literal["float32", "bfloat16", "int8"]:
        """``text_dtype`` with ``auto`` resolved for ``device``."""
        if self.text_dtype != "auto":
            return self.text_dtype
        return "int8" if self.device == "cpu" else "float32"

    @field_validator("api_key", "read_api_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_key", "read_api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(f"API keys must be at least {MIN_API_KEY_CHARS} characters (a random token)")
        return value

    @field_validator("media_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("media_roots")
    @classmethod
    def _existing_folders(cls, roots: list[Path]) -> list[Path]:
        resolved = []
        for root in roots:
            folder = root.expanduser().resolve()
            if not folder.is_dir():
                raise ValueError(f"TVR_MEDIA_ROOTS: {root} is not a folder")
            resolved.append(folder)
        return resolved

    @property
    def admin_enabled(self) -> bool:
        return self.api_key is not None

    def keys_granting_reads(self) -> list[str]:
        """The keys a reader may present when ``read_api_key`` is set (the admin key reads too)."""
        return [key.get_secret_value() for key in (self.read_api_key, self.api_key) if key is not None]
