class TerraError(Exception):
    """Root of the runtime's own errors."""


class ConfigurationError(TerraError):
    """Settings that cannot run: says what to set."""


class ProvisioningConflict(TerraError):
    """An existing stream, consumer or bucket differs from the contract's definition."""


class StorageError(TerraError):
    """Object storage failed or refused an operation."""


class ObjectMissing(StorageError):
    """The object does not exist (deleted, swept, never written): an answer, not a fault."""
