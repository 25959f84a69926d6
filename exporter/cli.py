"""The ``codebook`` command: lookup, validate, list, serve."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .codebook import builtin_mappings_dir, load_codebook
from .loader import MappingError, load_tables


def _lookup(args: argparse.Namespace) -> int:
    book = load_codebook(args.mappings)
    if book.canonical_source(args.source) is None:
        print(
            f"codebook: unknown source {args.source!r}; known: {', '.join(book.sources)}",
            file=sys.stderr,
        )
        return 2
    res = book.resolve(args.source, args.code, args.subcode, args.message)
    out = {
        "source": book.canonical_source(args.source),
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
    paths: list[str | Path] = list(args.paths) or [builtin_mappings_dir()]
    missing = [p for p in paths if not Path(p).exists()]
    for p in missing:
        print(f"{p}:1: (file): no such file or directory", file=sys.stderr)
    try:
        tables = load_tables([[p for p in paths if p not in missing]])
    except MappingError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"codebook: {len(exc.problems) + len(missing)} problem(s)", file=sys.stderr)
        return 1
    if missing:
        return 1
    entries = sum(len(t.entries) for t in tables)
    print(f"ok: {len(tables)} source(s), {entries} entries")
    return 0


def _list(args: argparse.Namespace) -> int:
    book = load_codebook(args.mappings)
    if args.source is None:
        rows: list[tuple[str, ...]] = [
            (
                t.source,
                t.version,
                str(len(t.entries)),
                str(len(t.classes)),
                ",".join(t.aliases),
                t.title,
            )
            for t in (book.tables[s] for s in book.sources)
        ]
        _table(("SOURCE", "VERSION", "ENTRIES", "CLASSES", "ALIASES", "TITLE"), rows)
        return 0
    src = book.canonical_source(args.source)
    if src is None:
        print(
            f"codebook: unknown source {args.source!r}; known: {', '.join(book.sources)}",
            file=sys.stderr,
        )
        return 2
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
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

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
    p.add_argument("--json", action="store_true", help="print JSON")
    mappings_opt(p)
    p.set_defaults(func=_lookup)

    p = sub.add_parser(
        "validate",
        help="validate mapping files",
        description="Validate mapping files (default: the built-in ones). Prints "
        "every problem as file:line: key: message; exits 1 on any.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="mapping files or folders")
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "list",
        help="list sources, or one source's codes",
        description="List the loaded sources, or every code of one source.",
    )
    p.add_argument("source", nargs="?", metavar="SOURCE")
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
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MappingError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except BrokenPipeError:  # `codebook list | head`
        return 0
