"""Loading and validating mapping files: strict schema, every problem in one pass.

Problems are reported as ``file:line: key: message``. A load with any problem fails as a
whole; callers keep whatever they had before (see :mod:`exporter.reload`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .keys import normalize_code, normalize_message
from .taxonomy import (
    DEFAULT_OWNER,
    DEFAULT_RETRYABLE,
    DEFAULT_SEVERITY,
    Category,
    Owner,
    Retryable,
    Severity,
)

SCHEMA_VERSION = 1
MAX_DESCRIPTION_CHARS = 160
DOC_LANGUAGES = ("ja", "zh", "en")
RESULT_CATEGORIES = ("Success", "ExpectedError", "UnexpectedClientError", "UnexpectedServerError")
# A class rule's only message: "any message no entry matched" (docs/taxonomy.md §1, rung 4).
ANY_MESSAGE = "*"

_SOURCE_ID = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_CLASS_DIGIT = re.compile(r"([1-9])xx", re.IGNORECASE)
_CLASS_RANGE = re.compile(r"(-?\d{1,9})-(-?\d{1,9})")

try:  # libyaml is an order of magnitude faster and keeps the same marks
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _YamlLoader = yaml.SafeLoader


class MappingError(Exception):
    """Mapping files failed to load; ``problems`` lists every ``file:line: key: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class Rule:
    """One classified row: a mapping entry, or a class rule when ``pattern`` is set.

    A class rule's ``message`` is empty, or ``ANY_MESSAGE`` ("*") for the rule that applies
    only to a code that comes with a message no entry matched.
    """

    source: str
    file: str
    line: int
    category: Category
    severity: Severity
    retryable: Retryable
    owner: Owner
    description: str
    code: str = ""
    subcode: str = ""
    message: str = ""
    message_text: str = ""  # the message as the mapping writes it (``message`` is folded)
    pattern: str = ""
    name: str = ""
    doc: tuple[tuple[str, str], ...] = ()
    result_category: str = ""
    ambiguous: bool = False
    note: str = ""
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """The lookup key: normalised (code, subcode, message), absent parts empty."""
        return (self.code, self.subcode, self.message)


@dataclass(slots=True)
class SourceTable:
    """One source's mapping as loaded from one or more files."""

    source: str
    title: str
    version: str
    file: str
    aliases: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    entries: list[Rule] = field(default_factory=list)
    classes: list[Rule] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _FileResult:
    table: SourceTable | None
    override: bool


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, file: str, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.items.append(f"{file}:{line}: {key or '(file)'}: {message}")


def _allowed(keys: Sequence[str]) -> str:
    return f" (allowed: {', '.join(keys)})"


def _suggest(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_TYPE_NAMES = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:map": "a mapping",
    "tag:yaml.org,2002:seq": "a list",
}


def _kind(node: yaml.Node) -> str:
    return _TYPE_NAMES.get(node.tag, node.tag)


class _FileChecker:
    """Walks one file's YAML node tree, collecting problems and building a SourceTable."""

    TOP_KEYS = (
        "schema",
        "source",
        "aliases",
        "title",
        "version",
        "seeds",
        "override",
        "classes",
        "entries",
    )
    ENTRY_KEYS = (
        "code",
        "subcode",
        "message",
        "name",
        "category",
        "severity",
        "retryable",
        "owner",
        "reason",
        "description",
        "doc",
        "result_category",
        "ambiguous",
        "note",
    )
    CLASS_KEYS = (
        "pattern",
        "message",
        "category",
        "severity",
        "retryable",
        "owner",
        "reason",
        "description",
        "doc",
        "note",
    )

    def __init__(self, file: str, problems: _Problems) -> None:
        self.file = file
        self.problems = problems

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        self.problems.add(self.file, node, key, message)

    def mapping(
        self, node: yaml.Node, path: str, allowed: Sequence[str], required: Sequence[str]
    ) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, path, f"expected a mapping, got {_kind(node)}")
            return None
        out: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else str(knode.value)
            where = f"{path}.{key}" if path else key
            if key not in allowed:
                self.problem(
                    knode,
                    where,
                    f"unknown key{_suggest(key, allowed) or _allowed(allowed)}",
                )
            elif key in out:
                self.problem(
                    knode, where, f"duplicate key (first at line {out[key].start_mark.line + 1})"
                )
            else:
                out[key] = vnode
        for key in required:
            if key not in out:
                self.problem(node, f"{path}.{key}" if path else key, "missing required key")
        return out

    def string(self, node: yaml.Node, path: str, *, max_chars: int = 0) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            self.problem(node, path, f"expected a string, got {_kind(node)}")
            return None
        text = str(node.value).strip()
        if not text:
            self.problem(node, path, "must not be empty")
            return None
        if max_chars and len(text) > max_chars:
            self.problem(node, path, f"is {len(text)} characters long; at most {max_chars}")
            return None
        return text

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            self.problem(node, path, f"expected true or false, got {_kind(node)}")
            return None
        return bool(yaml.safe_load(node.value))

    def strings(self, node: yaml.Node, path: str) -> list[str]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, path, f"expected a list, got {_kind(node)}")
            return []
        return [
            s
            for i, item in enumerate(node.value)
            if (s := self.string(item, f"{path}[{i}]")) is not None
        ]

    def code(self, node: yaml.Node, path: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (
            "tag:yaml.org,2002:str",
            "tag:yaml.org,2002:int",
        ):
            self.problem(node, path, f"expected a string or an integer, got {_kind(node)}")
            return None
        value = yaml.safe_load(node.value) if node.tag.endswith(":int") else str(node.value)
        normal = normalize_code(value)
        if normal is None:
            self.problem(node, path, f"{str(node.value)!r} is not a usable code")
        return normal

    def enum(self, node: yaml.Node, path: str, enum: type[Any], what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, path, f"expected {what}, got {_kind(node)}")
            return None
        value = str(node.value)
        if node.tag == "tag:yaml.org,2002:bool":
            self.problem(node, path, f"{value!r} is read as a boolean by YAML; quote it")
            return None
        try:
            return enum(value)
        except ValueError:
            self.problem(
                node, path, f"{value!r} is not {what}{_suggest(value, [m.value for m in enum])}"
            )
            return None

    # -- the document -------------------------------------------------------------------

    def check(self, root: yaml.Node) -> _FileResult:
        top = self.mapping(
            root, "", self.TOP_KEYS, ("schema", "source", "title", "version", "entries")
        )
        if top is None:
            return _FileResult(None, False)
        if "schema" in top:
            node = top["schema"]
            if node.tag != "tag:yaml.org,2002:int" or int(node.value) != SCHEMA_VERSION:
                self.problem(
                    node,
                    "schema",
                    f"{node.value!r} is not a supported schema version (expected {SCHEMA_VERSION})",
                )
        source = self.string(top["source"], "source") if "source" in top else None
        if source is not None and not _SOURCE_ID.fullmatch(source):
            self.problem(
                top["source"],
                "source",
                f"{source!r} is not a source id (lowercase dotted words, e.g. vonage.sms)",
            )
            source = None
        table = SourceTable(
            source=source or "",
            title=(self.string(top["title"], "title") or "") if "title" in top else "",
            version=(self.string(top["version"], "version") or "") if "version" in top else "",
            file=self.file,
        )
        if "aliases" in top:
            table.aliases = self.strings(top["aliases"], "aliases")
            for i, alias in enumerate(table.aliases):
                if not _SOURCE_ID.fullmatch(alias):
                    self.problem(
                        top["aliases"].value[i], f"aliases[{i}]", f"{alias!r} is not a source id"
                    )
        if "seeds" in top:
            table.seeds = self.strings(top["seeds"], "seeds")
        override = bool(self.boolean(top["override"], "override")) if "override" in top else False
        if "classes" in top:
            table.classes = list(self.rules(top["classes"], "classes", table.source, is_class=True))
        if "entries" in top:
            table.entries = list(
                self.rules(top["entries"], "entries", table.source, is_class=False)
            )
        return _FileResult(table if source else None, override)

    def rules(self, node: yaml.Node, path: str, source: str, *, is_class: bool) -> Iterator[Rule]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, path, f"expected a list, got {_kind(node)}")
            return
        seen: dict[tuple[str, str, str], int] = {}
        for i, item in enumerate(node.value):
            for rule in self.rule(item, f"{path}[{i}]", source, is_class=is_class):
                key = (rule.pattern, "", rule.message) if is_class else rule.key
                if key in seen:
                    self.problem(
                        item,
                        f"{path}[{i}]",
                        f"duplicate key {_describe_key(key, is_class)} (first at line {seen[key]})",
                    )
                    continue
                seen[key] = rule.line
                yield rule

    def rule(self, node: yaml.Node, path: str, source: str, *, is_class: bool) -> list[Rule]:
        allowed = self.CLASS_KEYS if is_class else self.ENTRY_KEYS
        required = (
            ("pattern", "category", "description")
            if is_class
            else ("category", "description", "doc")
        )
        fields = self.mapping(node, path, allowed, required)
        if fields is None:
            return []
        ok = all(key in fields for key in required)
        found: dict[str, Any] = {}
        for key, enum, what in (
            ("category", Category, "a category"),
            ("severity", Severity, "a severity"),
            ("retryable", Retryable, "a retryable value"),
            ("owner", Owner, "an owner"),
        ):
            if key in fields:
                found[key] = self.enum(fields[key], f"{path}.{key}", enum, what)
                ok = ok and found[key] is not None
        for key, limit in (
            ("description", MAX_DESCRIPTION_CHARS),
            ("reason", 0),
            ("note", 0),
            ("name", 0),
            ("pattern", 0),
        ):
            if key in fields:
                found[key] = self.string(fields[key], f"{path}.{key}", max_chars=limit)
                ok = ok and found[key] is not None
        doc = self.doc(fields["doc"], f"{path}.doc") if "doc" in fields else ()
        category = found.get("category")
        overrides = [k for k in ("severity", "retryable", "owner") if k in fields]
        if category is not None:
            defaults = {
                "severity": DEFAULT_SEVERITY[category],
                "retryable": DEFAULT_RETRYABLE[category],
                "owner": DEFAULT_OWNER[category],
            }
            for key in overrides:
                if found.get(key) is not None and found[key] == defaults[key]:
                    self.problem(
                        fields[key],
                        f"{path}.{key}",
                        f"'{found[key]}' is already the default for category "
                        f"'{category}'; remove it",
                    )
                    ok = False
            for key, value in defaults.items():
                found.setdefault(key, value)
        if overrides and "reason" not in fields:
            self.problem(node, f"{path}.reason", f"required when {', '.join(overrides)} is given")
            ok = False
        ambiguous = False
        if "ambiguous" in fields:
            ambiguous = bool(self.boolean(fields["ambiguous"], f"{path}.ambiguous"))
            if ambiguous and "note" not in fields:
                self.problem(
                    node,
                    f"{path}.note",
                    "required when ambiguous is true (say what the alternative reading is)",
                )
                ok = False
        result_category = ""
        if "result_category" in fields:
            result_category = (
                self.string(fields["result_category"], f"{path}.result_category") or ""
            )
            if result_category and result_category not in RESULT_CATEGORIES:
                self.problem(
                    fields["result_category"],
                    f"{path}.result_category",
                    f"{result_category!r} is not an ACS result category"
                    f"{_suggest(result_category, RESULT_CATEGORIES)}",
                )
                ok = False
        if is_class and found.get("pattern") and class_bounds(found["pattern"]) is None:
            self.problem(
                fields["pattern"],
                f"{path}.pattern",
                f"{found['pattern']!r} is not a class pattern (use '5xx' or '480-489')",
            )
            ok = False
        codes: list[str] | None
        message: str | None
        if is_class:
            codes, subcode, message = [""], "", self.any_message(fields, path)
            ok = ok and message is not None
        else:
            codes, subcode, message = self.keys(fields, path, node)
        if message and "message" in fields:
            found["message_text"] = " ".join(str(fields["message"].value).split())
        if not ok or codes is None or category is None:
            return []
        return [
            Rule(
                source=source,
                file=self.file,
                line=node.start_mark.line + 1,
                category=category,
                severity=found["severity"],
                retryable=found["retryable"],
                owner=found["owner"],
                description=found["description"],
                code=code,
                subcode=subcode,
                message=message or "",
                message_text=(found.get("message_text") or ""),
                pattern=(found.get("pattern") or "").lower(),
                name=found.get("name") or "",
                doc=doc,
                result_category=result_category,
                ambiguous=ambiguous,
                note=found.get("note") or "",
                reason=found.get("reason") or "",
            )
            for code in codes
        ]

    def any_message(self, fields: dict[str, yaml.Node], path: str) -> str | None:
        """A class rule's ``message``: "" when absent, "*" when given as such, else None."""
        if "message" not in fields:
            return ""
        text = self.string(fields["message"], f"{path}.message")
        if text is not None and text != ANY_MESSAGE:
            self.problem(
                fields["message"],
                f"{path}.message",
                f"{text!r} is not allowed on a class rule: only '*' (any message no entry "
                "matches); give a message its own entry with a code",
            )
            return None
        return text

    def keys(
        self, fields: dict[str, yaml.Node], path: str, node: yaml.Node
    ) -> tuple[list[str] | None, str, str]:
        codes: list[str] | None = [""]
        if "code" in fields:
            cnode = fields["code"]
            if isinstance(cnode, yaml.SequenceNode):
                if not cnode.value:
                    self.problem(cnode, f"{path}.code", "must not be an empty list")
                parsed = [self.code(c, f"{path}.code[{i}]") for i, c in enumerate(cnode.value)]
                codes = None if None in parsed or not parsed else [c for c in parsed if c]
            else:
                one = self.code(cnode, f"{path}.code")
                codes = None if one is None else [one]
        subcode = ""
        if "subcode" in fields:
            subcode = self.code(fields["subcode"], f"{path}.subcode") or ""
            codes = codes if subcode else None
        message = ""
        if "message" in fields:
            text = self.string(fields["message"], f"{path}.message")
            message = normalize_message(text) or "" if text else ""
            if not message:
                codes = None
            elif message == ANY_MESSAGE:
                self.problem(
                    fields["message"],
                    f"{path}.message",
                    "'*' (any message) is only for a class rule; an entry names one message",
                )
                codes = None
            elif "code" not in fields:
                self.problem(fields["message"], f"{path}.message", "needs a code beside it")
                codes = None
        if "code" not in fields and "subcode" not in fields:
            self.problem(node, path, "needs a code or a subcode")
            codes = None
        return codes, subcode, message

    def doc(self, node: yaml.Node, path: str) -> tuple[tuple[str, str], ...]:
        fields = self.mapping(node, path, DOC_LANGUAGES, ())
        if fields is None:
            return ()
        if not fields:
            self.problem(node, path, "needs at least one language (ja, zh, en)")
        return tuple(
            (lang, text)
            for lang, vnode in fields.items()
            if (text := self.string(vnode, f"{path}.{lang}")) is not None
        )


def _describe_key(key: tuple[str, str, str], is_class: bool) -> str:
    if is_class:
        return f"pattern={key[0]!r}" + (f" message={key[2]!r}" if key[2] else "")
    names = ("code", "subcode", "message")
    return " ".join(f"{n}={v!r}" for n, v in zip(names, key, strict=True) if v)


def class_bounds(pattern: str) -> tuple[int, int] | None:
    """The inclusive integer range of a class pattern (``5xx`` or ``480-489``), or None."""
    if m := _CLASS_DIGIT.fullmatch(pattern):
        base = int(m.group(1)) * 100
        return base, base + 99
    if m := _CLASS_RANGE.fullmatch(pattern):
        lo, hi = int(m.group(1)), int(m.group(2))
        return (lo, hi) if lo <= hi else None
    return None


def mapping_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders to their ``*.yaml``/``*.yml`` files (sorted); keep files as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
            )
        else:
            out.append(p)
    return out


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_tables(layers: Sequence[Iterable[str | Path]]) -> list[SourceTable]:
    """Load mapping layers (built-in first, overlays after) into merged source tables.

    Raises :class:`MappingError` listing every problem of every file; nothing is returned
    partially. Within a layer, two files for one source merge; a later layer may add sources
    and entries, and may replace entries only in a file that says ``override: true``.
    """
    problems = _Problems()
    merged: dict[str, SourceTable] = {}
    owner_of_name: dict[str, str] = {}
    for layer_no, layer in enumerate(layers):
        for path in mapping_files(layer):
            shown = _display(path)
            result = _load_file(path, shown, problems)
            if result is None or result.table is None:
                continue
            _merge(merged, result, layer_no > 0, problems)
    for table in merged.values():
        for name in [table.source, *table.aliases]:
            other = owner_of_name.setdefault(name, table.source)
            if other != table.source:
                problems.items.append(
                    f"{table.file}:1: aliases: {name!r} already names source {other!r}"
                )
    if problems.items:
        raise MappingError(sorted(problems.items, key=_problem_order))
    return list(merged.values())


def _problem_order(problem: str) -> tuple[str, int]:
    file, line, _ = problem.split(":", 2) if problem.count(":") >= 2 else (problem, "0", "")
    return (file, int(line) if line.isdigit() else 0)


def _load_file(path: Path, shown: str, problems: _Problems) -> _FileResult | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.items.append(f"{shown}:1: (file): cannot read: {exc}")
        return None
    try:
        root = yaml.compose(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        problems.items.append(yaml_problem(shown, exc, "(file)"))
        return None
    if root is None:
        problems.items.append(f"{shown}:1: (file): the file is empty")
        return None
    return _FileChecker(shown, problems).check(root)


def yaml_problem(file: str, exc: yaml.YAMLError, key: str) -> str:
    """A YAML syntax error as ``file:line:col: key: invalid YAML: problem`` (1-based)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return f"{file}:1: {key}: invalid YAML: {' '.join(str(exc).split())}"
    what = str(getattr(exc, "problem", None) or " ".join(str(exc).split()))
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and cmark is not None and cmark is not mark:
        what += f" ({context} at {cmark.line + 1}:{cmark.column + 1})"
    return f"{file}:{mark.line + 1}:{mark.column + 1}: {key}: invalid YAML: {what}"


def _merge(
    merged: dict[str, SourceTable], result: _FileResult, overlay: bool, problems: _Problems
) -> None:
    table = result.table
    assert table is not None
    base = merged.get(table.source)
    if base is None:
        merged[table.source] = table
        return
    by_key = {rule.key: i for i, rule in enumerate(base.entries)}
    for rule in table.entries:
        i = by_key.get(rule.key)
        if i is None:
            by_key[rule.key] = len(base.entries)
            base.entries.append(rule)
        elif overlay and result.override:
            base.entries[i] = rule
        else:
            first = base.entries[i]
            hint = "; set 'override: true' in the overlay file to replace it" if overlay else ""
            problems.items.append(
                f"{rule.file}:{rule.line}: entries: {_describe_key(rule.key, False)} of "
                f"{table.source!r} conflicts with {first.file}:{first.line}{hint}"
            )
    existing = {(c.pattern, c.message): i for i, c in enumerate(base.classes)}
    for rule in table.classes:
        i = existing.get((rule.pattern, rule.message))
        if i is None:
            existing[(rule.pattern, rule.message)] = len(base.classes)
            base.classes.append(rule)
        elif overlay and result.override:
            base.classes[i] = rule
        else:
            with_message = f" with message {rule.message!r}" if rule.message else ""
            problems.items.append(
                f"{rule.file}:{rule.line}: classes: pattern {rule.pattern!r}{with_message} of "
                f"{table.source!r} conflicts with {base.classes[i].file}:{base.classes[i].line}"
            )
    base.aliases.extend(a for a in table.aliases if a not in base.aliases)
    if overlay:
        base.version = f"{base.version}+{table.version}"
