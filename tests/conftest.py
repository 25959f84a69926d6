"""Session set-up: the source tree's ``exporter`` gets the C extension that pip built.

``python -m pytest`` from the repository root imports ``exporter`` from the source tree (the
current directory comes first on ``sys.path``), not from the installed wheel, so the
extension ``exporter._wire`` that ``pip install .`` compiled would be missing and every test
(and every ``python -m exporter serve`` child, which runs from the root too) would silently
take the pure-Python path. When the source tree has no extension, or an outdated one, the
installed distribution's copy is placed beside the sources (it is git-ignored).
``test_wire.py`` fails under CI when the extension is still missing, so a broken C build
cannot pass unnoticed.
"""

from __future__ import annotations

import importlib.machinery
import shutil
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "exporter"


def _installed_extension() -> Path | None:
    # Every installed copy: the build leaves an egg-info in the source tree, which is found
    # first (the current directory leads sys.path) and lists no compiled files.
    files = [
        f for dist in metadata.distributions(name="codebook-exporter") for f in dist.files or []
    ]
    for f in files:
        name = f.name
        if f.parent.name == "exporter" and name.startswith("_wire.") and any(
            name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES
        ):
            path = Path(str(f.locate()))
            if path.is_file() and path.resolve().parent != PACKAGE:
                return path
    return None


def _place_extension() -> None:
    built = _installed_extension()
    if built is None:
        return
    target = PACKAGE / built.name
    if not target.exists() or target.read_bytes() != built.read_bytes():
        shutil.copyfile(built, target)


_place_extension()
