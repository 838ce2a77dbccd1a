"""The exceptions the RTS monitor raises: one root, one subclass per kind of problem."""


class RtsError(Exception):
    """Root of every error the RTS monitor raises on purpose."""


class ConfigError(RtsError):
    """A site or run configuration is invalid.

    ``problems`` holds one ``(field, message)`` pair per problem, so that several problems of one
    file are reported together.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "; ".join(f"{field}: {message}" for field, message in problems)
        super().__init__(f"{source}: {lines}")


class SceneError(RtsError):
    """No usable scene, or a scene whose data is missing or broken."""


class NoSceneError(SceneError):
    """No scene matches the search (site, window, cloud limit)."""


class DemError(RtsError):
    """The elevation model could not be found or read."""


class ModelError(RtsError):
    """A model bundle is missing, corrupt, or does not match the stack it is given."""


class StorageError(RtsError):
    """A storage backend failed to read or write."""


class NotFoundError(StorageError):
    """A blob or table row does not exist."""


class MissingExtraError(RtsError):
    """An optional dependency is not installed; the message names the extra to install."""
