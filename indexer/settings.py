"""Settings shared by the indexer and the service: one object read from ``TVR_*`` variables and ``.env``.

Importing this module has no side effects: nothing is created until a command asks for a directory.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic_settings import BaseSettings, SettingsConfigDict

CATALOG_FILE = "catalog.sqlite3"


def default_data_dir() -> Path:
    """The per-user cache folder for tvr: ``~/.cache/tvr`` on Linux (honouring ``XDG_CACHE_HOME``),
    ``~/Library/Caches/tvr`` on macOS, ``%LOCALAPPDATA%\\tvr\\Cache`` on Windows."""
    return Path(platformdirs.user_cache_dir("tvr", appauthor=False))


class Settings(BaseSettings):
    """Where the catalog and index versions live, and which encoder makes the vectors."""

    model_config = SettingsConfigDict(env_prefix="TVR_", env_file=".env", extra="ignore")

    data_dir: Path = default_data_dir()
    """Holds the SQLite catalog (unless ``database_url`` says otherwise) and ``index/`` (and legacy
    ``thumbnails/``)."""
    database_url: str | None = None
    """SQLAlchemy URL of the catalog; ``None`` means ``sqlite:///<data_dir>/catalog.sqlite3``."""
    checkpoint: str = "demo"
    """Any ``model.load_encoder`` source: a checkpoint file or folder, a packaged name, ``openclip:ARCH/TAG``."""
    device: str = "cpu"
    """Torch device for encoding (``cpu``, ``cuda``, ``cuda:1``)."""

    @property
    def catalog_url(self) -> str:
        """The catalog's SQLAlchemy URL, the embedded SQLite file when none is configured."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.expanduser().resolve() / CATALOG_FILE}"

    @property
    def index_dir(self) -> Path:
        """Published FAISS index versions (``v000001/``, ...) and the ``CURRENT`` pointer."""
        return self.data_dir.expanduser() / "index"

    @property
    def thumbnails_dir(self) -> Path:
        """Thumbnail files of catalogs written before revision 0004 (``Clip.thumbnail`` is a path relative to
        this folder); newer thumbnails live in the catalog (``ClipThumbnail``)."""
        return self.data_dir.expanduser() / "thumbnails"

    @property
    def uses_embedded_catalog(self) -> bool:
        """True when the catalog is SQLite (the CLI then migrates it by itself)."""
        return self.catalog_url.startswith("sqlite")
