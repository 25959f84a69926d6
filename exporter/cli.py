"""The ``codebook`` command: lookup, validate, list, serve."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .codebook import Codebook, builtin_mappings_dir, load_codebook
from .loader import MappingError, load_tables


class _Failure(Exception):
    """A command's error: printed as text on stderr, or as JSON on stdout with ``--json``."""

    def __init__(self, status: int, message: str, **detail: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def _source(book: Codebook, name: str) -> str:
    """The canonical id ``name`` names, case-insensitively; else a "did you mean" failure."""
    exact = book.canonical_source(name)
    if exact is not None:
        return exact
    names = {n: book.canonical_source(n) or n for s in book.sources
             for n in (s, *book.tables[s].aliases)}
    folded = {n.casefold(): src for n, src in names.items()}
    key = name.strip().casefold()
    if key in folded:
        return folded[key]
    close = difflib.get_close_matches(key, list(folded), n=3, cutoff=0.75)
    close += sorted(n for n in folded if n.startswith(key + ".") and n not in close)
    suggestions = list(dict.fromkeys(folded[n] for n in close))[:3]  # closest first
    hint = f" (did you mean {' or '.join(repr(c) for c in suggestions)}?)" if suggestions else ""
    raise _Failure(
        2,
        f"unknown source {name!r}{hint}; `codebook list` shows every source",
        source=name,
        did_you_mean=suggestions,
    )


def _lookup(args: argparse.Namespace) -> int:
    book = load_codebook(args.mappings)
    source = _source(book, args.source)
    res = book.resolve(source, args.code, args.subcode, args.message)
    out = {
        "source": source,
        "code": args.code,
        "subcode": args.subcode,
        "message": args.message,
        **res.as_dict(),
    }
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    for key in (
        "source",
        "code",
        "subcode",
        "message",
        "category",
        "severity",
        "retryable",
        "owner",
        "match",
        "description",
        "name",
        "note",
        "reason",
        "mapping",
    ):
        if out.get(key):
            print(f"{key:12} {out[key]}")
    for lang, text in res.rule.doc if res.rule else ():
        print(f"{'doc.' + lang:12} {' '.join(text.split())}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    paths: list[str | Path] = list(args.paths)
    missing = [p for p in paths if not Path(p).exists()]
    present = [p for p in paths if p not in missing]
    builtin = args.builtin or not paths
    if builtin:
        # The built-in folder itself (an editable install's mappings/) is the built-in layer,
        # not an overlay on it.
        own = builtin_mappings_dir().resolve()
        present = [p for p in present if own not in (Path(p).resolve(), Path(p).resolve().parent)]
    # The same layers loading uses: the built-ins, then each path overlaid in turn.
    layers: list[list[str | Path]] = [[builtin_mappings_dir()]] if builtin else []
    layers += [[p] for p in present] if builtin else [present]
    problems = [f"{p}:1: (file): no such file or directory" for p in missing]
    tables = []
    try:
        tables = load_tables(layers)
        Codebook(tables)
    except MappingError as exc:
        problems += exc.problems
    if problems:
        raise _Failure(1, f"{len(problems)} problem(s)", problems=problems)
    entries = sum(len(t.entries) for t in tables)
    with_builtin = " with the built-in mappings" if builtin and paths else ""
    summary = f"ok: {len(tables)} source(s), {entries} entries{with_builtin}"
    if args.json:
        print(json.dumps({"ok": True, "sources": len(tables), "entries": entries,
                          "builtin": builtin, "problems": []}, indent=2))
    else:
        print(summary)
    return 0


def _list(args: argparse.Namespace) -> int:
    book = load_codebook(args.mappings)
    if args.source is None:
        tables = [book.tables[s] for s in book.sources]
        if args.json:
            print(json.dumps([
                {"source": t.source, "version": t.version, "entries": len(t.entries),
                 "classes": len(t.classes), "aliases": list(t.aliases), "title": t.title}
                for t in tables
            ], ensure_ascii=False, indent=2))
            return 0
        rows: list[tuple[str, ...]] = [
            (
                t.source,
                t.version,
                str(len(t.entries)),
                str(len(t.classes)),
                ",".join(t.aliases),
                t.title,
            )
            for t in tables
        ]
        _table(("SOURCE", "VERSION", "ENTRIES", "CLASSES", "ALIASES", "TITLE"), rows)
        return 0
    src = _source(book, args.source)
    if args.json:
        print(json.dumps([
            {"code": r.code, "pattern": r.pattern, "subcode": r.subcode,
             "message": r.message_text, "name": r.name, "category": str(r.category),
             "severity": str(r.severity), "retryable": str(r.retryable), "owner": str(r.owner),
             "description": r.description, "mapping": f"{r.file}:{r.line}"}
            for r in book.rules(src)
        ], ensure_ascii=False, indent=2))
        return 0
    rows = [
        (
            r.pattern or r.code,
            r.subcode,
            r.message_text or r.message,
            str(r.category),
            str(r.severity),
            str(r.retryable),
            str(r.owner),
            r.description,
        )
        for r in book.rules(src)
    ]
    _table(
        ("CODE", "SUBCODE", "MESSAGE", "CATEGORY", "SEVERITY", "RETRYABLE", "OWNER", "DESCRIPTION"),
        rows,
    )
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def _serve(args: argparse.Namespace) -> int:
    from .sidecar.serve import main as serve_main

    return serve_main(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="codebook",
        description="Classify messaging-provider status codes for OpenTelemetry and Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"codebook {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def json_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--json", action="store_true", help="print JSON on stdout (errors too)"
        )

    def mappings_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mappings",
            action="append",
            default=[],
            metavar="DIR",
            help="extra mapping folder overlaid on the built-in ones (repeatable)",
        )

    p = sub.add_parser(
        "lookup",
        help="resolve one code",
        description="Resolve one provider code and print its classification.",
    )
    p.add_argument("source", metavar="SOURCE", help="source id or alias, e.g. vonage.sms")
    p.add_argument("code", metavar="CODE", help="the provider code, e.g. 1")
    p.add_argument("--subcode", help="ACS subcode")
    p.add_argument("--message", help="Braze error message")
    json_opt(p)
    mappings_opt(p)
    p.set_defaults(func=_lookup)

    p = sub.add_parser(
        "validate",
        help="validate mapping files",
        description="Validate mapping files as they load: each PATH overlaid on the built-in "
        "mappings (no PATH: the built-in ones alone), so ok means the files load. Prints "
        "every problem as file:line: key: message; exits 1 on any.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="mapping files or folders")
    p.add_argument(
        "--no-builtin",
        dest="builtin",
        action="store_false",
        help="check the files alone, without the built-in mappings",
    )
    json_opt(p)
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "list",
        help="list sources, or one source's codes",
        description="List the loaded sources, or every code of one source.",
    )
    p.add_argument("source", nargs="?", metavar="SOURCE")
    json_opt(p)
    mappings_opt(p)
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "serve",
        help="run the OTLP sidecar",
        description="Receive OTLP, enrich, count, expose /metrics, forward.",
    )
    from .sidecar.serve import add_arguments

    add_arguments(p)
    p.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    if "--json" in (sys.argv[1:] if argv is None else argv):
        _json_usage_errors(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except MappingError as exc:
        return _fail(args, _Failure(1, f"{len(exc.problems)} problem(s)",
                                    problems=list(exc.problems)))
    except _Failure as failure:
        return _fail(args, failure)
    except BrokenPipeError:  # `codebook list | head`
        return 0


def _json_usage_errors(parser: argparse.ArgumentParser) -> None:
    """Make usage errors (a missing or unknown argument) of ``parser`` and its verbs print one
    JSON object on stdout, as every other error does under ``--json``; exit status 2."""
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())

    for p in parsers:
        def error(message: str, p: argparse.ArgumentParser = p) -> NoReturn:
            print(json.dumps({"error": message, "usage": p.format_usage().strip()},
                             ensure_ascii=False, indent=2))
            sys.exit(2)

        setattr(p, "error", error)  # noqa: B010 (an instance's own error(), argparse's hook)


def _fail(args: argparse.Namespace, failure: _Failure) -> int:
    """Report ``failure``: one JSON object on stdout with ``--json``, else text on stderr."""
    if getattr(args, "json", False):
        print(json.dumps({"error": failure.message, **failure.detail}, ensure_ascii=False,
                         indent=2))
        return failure.status
    problems = failure.detail.get("problems")
    for problem in problems if isinstance(problems, list) else ():
        print(problem, file=sys.stderr)
    print(f"codebook: {failure.message}", file=sys.stderr)
    return failure.status
