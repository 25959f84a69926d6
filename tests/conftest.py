"""Session set-up: the source tree's ``exporter`` gets the C extension that pip built.

``python -m pytest`` from the repository root imports ``exporter`` from the source tree (the
current directory comes first on ``sys.path``), not from the installed wheel, so the
extensions ``exporter._wire`` and ``exporter._hot`` that ``pip install .`` compiled would be
missing and every test (and every ``python -m exporter serve`` child, which runs from the root
too) would silently take the pure-Python paths. When the source tree has no extension, or an
outdated one, the installed distribution's copy is placed beside the sources (git-ignored).
``test_wire.py`` and ``test_hot.py`` fail under CI when an extension is still missing, so a
broken C build cannot pass unnoticed.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "exporter"


EXTENSIONS = ("_wire", "_hot")


def _installed_extensions() -> list[Path]:
    # Every installed copy: the build leaves an egg-info in the source tree, which is found
    # first (the current directory leads sys.path) and lists no compiled files.
    files = [
        f for dist in metadata.distributions(name="codebook-exporter") for f in dist.files or []
    ]
    found: dict[str, Path] = {}
    for f in files:
        name = f.name
        stem = name.split(".", 1)[0]
        if f.parent.name == "exporter" and stem in EXTENSIONS and stem not in found and any(
            name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES
        ):
            path = Path(str(f.locate()))
            if path.is_file() and path.resolve().parent != PACKAGE:
                found[stem] = path
    return list(found.values())


def _place_extensions() -> None:
    for built in _installed_extensions():
        target = PACKAGE / built.name
        if not target.exists() or target.read_bytes() != built.read_bytes():
            shutil.copyfile(built, target)


# tests/fuzz/sanitize.sh runs the tests against its instrumented build: keep that one.
if not os.environ.get("CODEBOOK_SANITIZED_BUILD"):
    _place_extensions()
