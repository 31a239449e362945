"""The contract between precompute and training: a trajectory store's spec, Zarr layout, writer
and reader."""

from mosic.store_schema.layout import DONE, FAILED, PENDING, Failure, StoreMeta  # noqa: F401
from mosic.store_schema.reader import (  # noqa: F401
    ClipTracks,
    CorruptStoreError,
    IncompleteStoreError,
    StoreError,
    StoreReader,
)
from mosic.store_schema.spec import SCHEMA_VERSION, DatasetSpec, StoreSpec, TrackerSpec  # noqa: F401
from mosic.store_schema.writer import StoreMismatchError, StoreWriter  # noqa: F401
