"""The exceptions the RTS monitor raises: one root, one subclass per kind of problem."""

from collections.abc import Iterator


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


class ConflictError(StorageError):
    """A conditional write lost: the row was written by someone else since it was read."""


class MissingExtraError(RtsError):
    """An optional dependency is not installed; the message names the extra to install."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from (``__cause__``, else an unsuppressed ``__context__``)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def error_chain(exc: BaseException, max_links: int = 5) -> str:
    """``Type: message`` of ``exc`` and of the errors it was raised from, joined by ``<-``.

    Libraries often wrap the telling error (rasterio's "Read failed. See previous exception" wraps
    GDAL's message naming the file and block), so a stored failure reason needs the whole chain.
    """
    links: list[str] = []
    for link in causes(exc):
        if len(links) == max_links:
            break
        text = f"{type(link).__name__}: {link}"
        if text not in links:
            links.append(text)
    return " <- ".join(links)
