"""Resolving a provider code: the immutable Codebook and its fallback ladder (taxonomy §1)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .keys import MAX_MESSAGE_CHARS, normalize_code, normalize_message
from .loader import ANY_MESSAGE, Rule, SourceTable, class_bounds, load_tables
from .taxonomy import (
    DEFAULT_OWNER,
    DEFAULT_RETRYABLE,
    DEFAULT_SEVERITY,
    NON_ERROR_CATEGORIES,
    Category,
    Match,
    Owner,
    Retryable,
    Severity,
)

_log = logging.getLogger(__name__)

# Output span/metric attribute names (ARCHITECTURE.md, fixed).
ATTR_SOURCE = "provider.source"
ATTR_CODE = "provider.code"
ATTR_SUBCODE = "provider.subcode"
ATTR_MESSAGE = "provider.message"
ATTR_CATEGORY = "provider.category"
ATTR_SEVERITY = "provider.severity"
ATTR_RETRYABLE = "provider.retryable"
ATTR_OWNER = "provider.owner"
ATTR_MATCH = "provider.match"
ATTR_ERROR_TYPE = "error.type"
# The name of a span event that carries one provider result (one per recipient, say).
EVENT_RESULT = "provider.result"

# The subcode that means "no specific subcode" in the ACS tables (docs/taxonomy.md §1).
NO_SUBCODE = "0"

# Distinct raw inputs remembered per Codebook before the fallback cache starts over.
DEFAULT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True, eq=False)
class Resolution:
    """What a code means: closed labels, how it matched, and the mapping's description.

    ``source`` is the canonical source id, or None when the source is not known. ``attributes``
    are the output attributes to add to a span or data point (shared; do not mutate).
    """

    source: str | None
    category: Category
    severity: Severity
    retryable: Retryable
    owner: Owner
    match: Match
    description: str
    rule: Rule | None = None
    attributes: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_error(self) -> bool:
        """True when the operation did not get through (OpenTelemetry's notion of an error)."""
        return self.category not in NON_ERROR_CATEGORIES

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view, for the CLI and logs."""
        rule = self.rule
        return {
            "source": self.source,
            "category": str(self.category),
            "severity": str(self.severity),
            "retryable": str(self.retryable),
            "owner": str(self.owner),
            "match": str(self.match),
            "description": self.description,
            "name": rule.name if rule else "",
            "mapped_message": rule.message_text if rule else "",
            "ambiguous": rule.ambiguous if rule else False,
            "note": rule.note if rule else "",
            "reason": rule.reason if rule else "",
            "doc": dict(rule.doc) if rule else {},
            "mapping": f"{rule.file}:{rule.line}" if rule else "",
        }


def _make(source: str | None, match: Match, rule: Rule | None) -> Resolution:
    if rule is None:
        category = Category.UNKNOWN
        severity, retryable, owner = (
            DEFAULT_SEVERITY[category],
            DEFAULT_RETRYABLE[category],
            DEFAULT_OWNER[category],
        )
        description = "No mapping for this code" if source else "Unknown provider source"
    else:
        category, severity, retryable, owner = (
            rule.category,
            rule.severity,
            rule.retryable,
            rule.owner,
        )
        description = rule.description
    attrs = {
        ATTR_CATEGORY: category.value,
        ATTR_SEVERITY: severity.value,
        ATTR_RETRYABLE: retryable.value,
        ATTR_OWNER: owner.value,
        ATTR_MATCH: match.value,
    }
    if category not in NON_ERROR_CATEGORIES:
        attrs[ATTR_ERROR_TYPE] = category.value
    return Resolution(
        source,
        category,
        severity,
        retryable,
        owner,
        match,
        description,
        rule,
        attrs,  # a plain dict: merging it into span attributes is 3x faster than a proxy
    )


@dataclass(frozen=True, slots=True)
class _ClassRule:
    lo: int
    hi: int
    digits: int
    resolution: Resolution


class Codebook:
    """An immutable, compiled set of mappings. Safe to share between threads.

    Built once (the expensive part); :meth:`resolve` is then a dict lookup for every input
    seen before. Reloading builds a new Codebook and swaps it whole.
    """

    def __init__(
        self, tables: Iterable[SourceTable], *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self.tables: dict[str, SourceTable] = {}
        self._names: dict[str, str] = {}
        self._exact: dict[tuple[str, str, str, str], Resolution] = {}
        self._subcode: dict[tuple[str, str], Resolution] = {}
        self._name_codes: dict[tuple[str, str], str] = {}
        self._classes: dict[str, tuple[_ClassRule, ...]] = {}
        self._message_classes: dict[str, tuple[_ClassRule, ...]] = {}
        self._cache_size = max(cache_size, 0)
        subcode_seen: dict[tuple[str, str], list[Rule]] = {}
        name_seen: dict[tuple[str, str], set[str]] = {}
        for table in tables:
            src = table.source
            self.tables[src] = table
            for name in (src, *table.aliases):
                self._names[name] = src
            for rule in table.entries:
                res = _make(src, Match.EXACT, rule)
                self._exact[(src, *rule.key)] = res
                if rule.subcode and rule.subcode != NO_SUBCODE:
                    subcode_seen.setdefault((src, rule.subcode), []).append(rule)
                if rule.name and rule.code:
                    name_seen.setdefault((src, rule.name), set()).add(rule.code)
            compiled = [
                (
                    rule.message == ANY_MESSAGE,
                    _ClassRule(
                        lo,
                        hi,
                        len(rule.pattern) if "x" in rule.pattern else 0,
                        _make(src, Match.CLASS, rule),
                    ),
                )
                for rule in table.classes
                if (bounds := class_bounds(rule.pattern)) is not None
                for lo, hi in (bounds,)
            ]
            self._classes[src] = tuple(c for any_msg, c in compiled if not any_msg)
            self._message_classes[src] = tuple(c for any_msg, c in compiled if any_msg)
        for (src, sub), rules in subcode_seen.items():
            # A subcode decides alone only when the source gives it one meaning: a subcode-only
            # entry, or the single entry that carries it (docs/taxonomy.md §1).
            alone = [r for r in rules if not r.code]
            chosen = alone[0] if alone else (rules[0] if len(rules) == 1 else None)
            if chosen is not None:
                self._subcode[(src, sub)] = self._exact[(src, *chosen.key)]
        codes_of = {(src, code) for src, code, _sub, _msg in self._exact}
        for (src, name), named in name_seen.items():
            # A provider name stands for its code when it names one code of the source and is
            # not itself a code there (docs/taxonomy.md §1): APNs BadDeviceToken is 2009.
            key = normalize_code(name)
            if len(named) == 1 and key and (src, key) not in codes_of:
                self._name_codes[(src, key)] = next(iter(named))
        self._unknown_source = _make(None, Match.UNMAPPED, None)
        self._unmapped = {src: _make(src, Match.UNMAPPED, None) for src in self.tables}
        self._base_cache = self._seed_cache()
        self._cache = dict(self._base_cache)

    def _seed_cache(self) -> dict[tuple[object, object, object, object], Resolution]:
        """Pre-fill the lookup cache with every entry under the forms telemetry sends."""
        cache: dict[tuple[object, object, object, object], Resolution] = {}
        for name, src in self._names.items():
            for (s, code, sub, msg), res in self._exact.items():
                if s != src or msg:
                    continue
                codes: list[object] = [code] + ([int(code)] if _is_int(code) else [])
                subs: list[object] = [sub] + ([int(sub)] if _is_int(sub) else []) if sub else [None]
                for c in codes if code else [None]:
                    for sb in subs:
                        cache[(name, c, sb, None)] = res
        return cache

    # -- queries ---------------------------------------------------------------------------

    def canonical_source(self, source: object) -> str | None:
        """The source id that ``source`` (an id or alias) names, or None."""
        return self._names.get(source) if isinstance(source, str) else None

    @property
    def sources(self) -> list[str]:
        """The canonical source ids, sorted."""
        return sorted(self.tables)

    def resolve(
        self, source: object, code: object, subcode: object = None, message: object = None
    ) -> Resolution:
        """Resolve one code. Never raises: anything unusable resolves to unknown/unmapped."""
        try:
            return self._cache[(source, code, subcode, message)]
        except (KeyError, TypeError):
            pass
        try:
            res = self._resolve(source, code, subcode, message)
        except Exception:  # the hot path never raises; a bug here must not break telemetry
            _log.exception("codebook: resolve failed")
            return self._unknown_source
        if self._cache_size and cacheable(source, code, subcode, message):
            if len(self._cache) >= self._cache_size + len(self._base_cache):
                # Hostile or high-variety input: start over rather than grow or evict per call.
                self._cache = dict(self._base_cache)
            self._cache[(source, code, subcode, message)] = res
        return res

    def _resolve(
        self, source: object, code: object, subcode: object, message: object
    ) -> Resolution:
        if isinstance(source, (bytes, bytearray)):
            source = bytes(source).decode("utf-8", "replace")
        src = self._names.get(source.strip()) if isinstance(source, str) else None
        if src is None:
            return self._unknown_source
        c = normalize_code(code) or ""
        c = self._name_codes.get((src, c), c)
        sub = normalize_code(subcode) or ""
        exact = self._exact
        if sub:
            # Subcode 0 means "no specific subcode": it matches only its own (code, 0) pair,
            # never alone (docs/taxonomy.md §1); such a code resolves by the code below.
            hit = exact.get((src, c, sub, "")) or self._subcode.get((src, sub))
            if hit is not None:
                return hit
        if c:
            msg = normalize_message(message)
            if msg and (hit := exact.get((src, c, "", msg))) is not None:
                return hit
            if (hit := exact.get((src, c, "", ""))) is not None:
                return hit
            if msg or _long_text(message):
                # A class rule with ``message: "*"``: the code came with a message that no
                # entry matched (a Braze 2xx with a non-fatal error, docs/taxonomy.md §1).
                for rule in self._message_classes[src]:
                    if _in_class(c, rule):
                        return rule.resolution
            for rule in self._classes[src]:
                if _in_class(c, rule):
                    return rule.resolution
        return self._unmapped[src]

    def rules(self, source: str | None = None) -> list[Rule]:
        """Every entry (then class rule) of one source, or of all sources, in file order."""
        names = [self.canonical_source(source) or ""] if source else self.sources
        return [
            r
            for s in names
            if s in self.tables
            for r in (*self.tables[s].entries, *self.tables[s].classes)
        ]

    def is_known_key(self, source: str, code: str, subcode: str) -> bool:
        """True when (code, subcode) are label values the mappings define (bounded)."""
        return (source, code, subcode, "") in self._exact or (
            not code and (source, subcode) in self._subcode
        )


def cacheable(*values: object) -> bool:
    """True when every value is small and hashable enough to be kept as a cache key."""
    for v in values:
        if v is None or type(v) is int or type(v) is bool or type(v) is float:
            continue
        if type(v) is not str or len(v) > MAX_MESSAGE_CHARS:
            return False
    return True


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _long_text(message: object) -> bool:
    """True for a message too long to match an entry: it still counts as a message given.

    Only the length decides (no scan of hostile megabyte strings); an oversized all-blank
    message is the one input this reads as given where a short one would not be.
    """
    return isinstance(message, (str, bytes, bytearray)) and len(message) > MAX_MESSAGE_CHARS


def _in_class(code: str, rule: _ClassRule) -> bool:
    if not _is_int(code):
        return False
    if rule.digits and len(code.lstrip("-")) != rule.digits:
        return False
    return rule.lo <= int(code) <= rule.hi


def builtin_mappings_dir() -> Path:
    """Where the built-in mappings live: inside the wheel, or the source tree's mappings/."""
    here = Path(__file__).resolve().parent
    packaged = here / "mappings"
    return packaged if packaged.is_dir() else here.parent / "mappings"


def load_codebook(
    extra_dirs: Iterable[str | Path] | str | Path | None = None,
    *,
    builtin: bool = True,
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> Codebook:
    """Load, validate and compile the built-in mappings, overlaid by ``extra_dirs``.

    Raises :class:`exporter.MappingError` listing every problem when any file is invalid.
    """
    if isinstance(extra_dirs, (str, Path)):
        extra_dirs = [extra_dirs]
    layers: list[list[str | Path]] = [[builtin_mappings_dir()]] if builtin else []
    layers.extend([d] for d in extra_dirs or ())
    return Codebook(load_tables(layers), cache_size=cache_size)
