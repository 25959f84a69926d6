"""Types of the C extension ``exporter._hot`` (source: ``_hot.c``)."""

from collections.abc import Callable
from typing import Any

class SpanHook:
    def __init__(
        self,
        processor: Any,
        enricher_type: type,
        ends: tuple[Callable[[Any], object], ...],
        slow: Callable[[Any], None],
        fail: Callable[[BaseException | None], None],
        readable_type: type,
        bounded_type: type,
        enriched_type: type,
        keys: tuple[str, str, str, str, str],
        default_status: object,
        unset_code: object,
        error_status: Callable[[str], object],
        /,
    ) -> None: ...
    def __call__(self, span: Any) -> None: ...
