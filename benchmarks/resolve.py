"""Resolve cost against a plain dict.get on the same keys, and the cost of loading mappings.

Prints ratios measured side by side in one run (interleaved repeats, medians). Goals
(issue 2): hits at most 2x dict.get; class fallbacks at most 3x; load time reported.
Run: python benchmarks/resolve.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter import load_codebook
from exporter.codebook import builtin_mappings_dir
from exporter.loader import load_tables


def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--loops", type=int, default=20)
    args = parser.parse_args()

    book = load_codebook()
    hits = [(r.source, r.code, r.subcode or None, None) for r in book.rules()
            if r.code and not r.message and not r.pattern][:400]
    plain = {k: book.resolve(*k) for k in hits}
    # Class fallbacks: codes that only a class rule covers (e.g. HTTP 5xx in ACS).
    classes = []
    for src in book.sources:
        for code in range(100, 700):
            if book.resolve(src, str(code)).match == "class":
                classes.append((src, str(code), None, None))
    classes = classes[:400]
    plain_classes = {k: book.resolve(*k) for k in classes}
    resolve, get, get_c = book.resolve, plain.get, plain_classes.get
    loops = args.loops

    def run_hits() -> None:
        for _ in range(loops):
            for s, c, sub, m in hits:
                resolve(s, c, sub, m)

    def run_dict() -> None:
        for _ in range(loops):
            for s, c, sub, m in hits:
                get((s, c, sub, m))

    def run_classes() -> None:
        for _ in range(loops):
            for s, c, sub, m in classes:
                resolve(s, c, sub, m)

    def run_dict_classes() -> None:
        for _ in range(loops):
            for s, c, sub, m in classes:
                get_c((s, c, sub, m))

    fresh = load_codebook(cache_size=0)  # no fallback cache: every lookup walks the ladder

    def run_classes_cold() -> None:
        for _ in range(loops):
            for s, c, sub, m in classes:
                fresh.resolve(s, c, sub, m)

    samples: dict[str, list[float]] = {k: [] for k in ("hits", "dict", "classes", "dictc")}
    for _ in range(args.repeats):
        samples["dict"].append(_time(run_dict))
        samples["hits"].append(_time(run_hits))
        samples["dictc"].append(_time(run_dict_classes))
        samples["classes"].append(_time(run_classes))
    med = {k: statistics.median(v) for k, v in samples.items()}
    n_hits, n_cls = len(hits) * loops, len(classes) * loops

    loads = [_time(lambda: load_tables([[builtin_mappings_dir()]])) for _ in range(5)]
    compiles = [_time(lambda: load_codebook()) for _ in range(5)]
    cold = statistics.median(_time(run_classes_cold) for _ in range(3))

    print(f"resolve hits      : {med['hits'] / n_hits * 1e9:7.1f} ns/op  "
          f"dict.get {med['dict'] / n_hits * 1e9:6.1f} ns/op  "
          f"ratio {med['hits'] / med['dict']:.2f}x (goal <= 2x)  [{len(hits)} keys]")
    print(f"resolve classes   : {med['classes'] / n_cls * 1e9:7.1f} ns/op  "
          f"dict.get {med['dictc'] / n_cls * 1e9:6.1f} ns/op  "
          f"ratio {med['classes'] / med['dictc']:.2f}x (goal <= 3x)  [{len(classes)} keys]")
    print(f"class ladder, cache off: {cold / max(n_cls, 1) * 1e9:7.1f} ns/op "
          f"(what a miss costs before it is cached)")
    print(f"load+validate built-ins: {statistics.median(loads) * 1e3:.1f} ms; "
          f"load+validate+compile: {statistics.median(compiles) * 1e3:.1f} ms "
          f"({sum(len(book.tables[s].entries) for s in book.sources)} entries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
