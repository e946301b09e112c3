"""The indexer's exceptions: the CLI turns an ``IndexerError`` into one message and a non-zero exit."""

from __future__ import annotations


class IndexerError(Exception):
    """A problem the user can act on (bad input, missing index, mismatched checkpoint, old catalog schema)."""


class ManifestError(IndexerError):
    """A manifest file that cannot be read, or a row without a usable path."""


class CatalogError(IndexerError):
    """The catalog database is unreachable, not migrated, or holds something unexpected."""


class IndexStoreError(IndexerError):
    """No published index, or a published version that cannot be read."""


class CheckpointMismatchError(IndexerError):
    """Vectors of one checkpoint would be mixed with vectors of another in one index."""


class CollectionError(IndexerError):
    """A collection name that breaks the naming rule, or a collection that is missing or already taken."""
