"""Named errors: every bad input ends in one of these, with a message that names the value."""


class AtlasError(Exception):
    """Base class; the CLI prints these as one clear line instead of a traceback."""


class AssetError(AtlasError):
    """A file or asset is missing, corrupt or of an unknown format."""


class ModelLoadError(AtlasError):
    """A language model could not be loaded from the given spec."""


class TranscoderError(AtlasError):
    """A transcoder file is malformed, or does not fit the model it is paired with."""


class SchemaError(AtlasError):
    """The database schema is missing, or newer than this version of atlas understands."""


class NotFoundError(AtlasError):
    """An id (model, source, feature) is not in the atlas."""


class DatabaseLockedError(AtlasError):
    """Another process holds the database file open for writing."""


class CorruptDatabaseError(AtlasError):
    """A database file is not DuckDB, unreadable, truncated or damaged (a table cannot be read to its end)."""


class FeatureIdError(AtlasError, ValueError):
    """A source id or feature index does not fit a feature id (fid = sid * 2**32 + idx)."""
