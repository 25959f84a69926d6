"""Types of the C extension ``exporter._wire`` (source: ``_wire.c``)."""

from collections.abc import Callable, Sequence

def set_schema(messages: Sequence[Sequence[tuple[int, int, int]]], /) -> None: ...
def enrich_traces(
    buf: bytes,
    resolve: Callable[[object, object, object, object, int], tuple[bytes, bytes | None] | None],
    input_keys: Sequence[bytes],
    output_keys: Sequence[bytes],
    /,
) -> tuple[bytes | None, int, int]: ...
def enrich_logs(
    buf: bytes,
    resolve: Callable[[object, object, object, object, int], tuple[bytes, bytes | None] | None],
    input_keys: Sequence[bytes],
    output_keys: Sequence[bytes],
    logs_root: int,
    /,
) -> tuple[bytes | None, int, int]: ...
def walk_stats() -> dict[str, int]: ...
