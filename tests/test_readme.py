"""Every ``python`` and ``sh`` block of README.md runs as written, in a fresh virtual environment.

The environment holds only what the README installs: a new venv (no system site packages) in
which every ``pip install ...`` of the README's blocks is run first, from a copy of the
checkout. Then each block runs on its own:

- ``python``: saved to a file and run with the venv's interpreter, in an empty folder;
- ``sh`` with ``$ `` prompts (a transcript): each command runs, must exit 0, and the output
  lines the README shows under it must appear in that order (``...`` stands for any lines);
- other ``sh``: run with ``bash -e`` in an empty folder (in the checkout copy when it runs
  ``pip install``, as the README says to run those from a checkout).

A marker on the line above a fence changes that: ``<!-- readme-test: server -->`` for a block
that starts a server and runs until stopped (it must print the sidecar's ``listening`` line,
then SIGTERM must stop it cleanly), ``<!-- readme-test: skip (why) -->`` for a block that only
illustrates (kept rare: the test caps their number). Every block is bounded in time.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LANGS = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh",
         "console": "sh"}
MODES = ("run", "server", "skip")
MAX_SKIPPED = 3
MARK = re.compile(r"^<!--\s*readme-test:\s*(\w+)\s*(?:\((.*)\))?\s*-->$")
RUN_SECONDS = 180.0
INSTALL_SECONDS = 600.0

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    line: int  # of the opening fence, 1-based
    lang: str  # "python" or "sh"
    text: str
    mode: str
    reason: str

    @property
    def id(self) -> str:
        return f"{self.lang}-line{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """The python and sh blocks of ``text`` with their markers (the line above the fence)."""
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+)\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        ticks, lang = fence.group(1), fence.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(ticks)),
                   len(lines))
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(above)
        if lang in LANGS:
            out.append(Block(i + 1, LANGS[lang], "\n".join(lines[i + 1:end]) + "\n",
                             mark.group(1) if mark else "run",
                             (mark.group(2) or "").strip() if mark else ""))
        i = end + 1
    return out


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_blocks_found_and_markers_valid() -> None:
    """The parser sees the README's examples; markers are known and skips are rare and said
    why."""
    assert any(b.lang == "python" for b in BLOCKS) and any(b.lang == "sh" for b in BLOCKS)
    for b in BLOCKS:
        assert b.mode in MODES, f"README.md:{b.line}: unknown readme-test mode {b.mode!r}"
        if b.mode == "skip":
            assert b.reason, f"README.md:{b.line}: say why the block is skipped"
    skipped = [b.line for b in BLOCKS if b.mode == "skip"]
    assert len(skipped) <= MAX_SKIPPED, f"too many illustrative-only blocks: {skipped}"


def test_parser_on_a_sample() -> None:
    """Markers bind to the next fence only; other languages are not collected."""
    sample = ("<!-- readme-test: skip (just a picture) -->\n\n```sh\necho hi\n```\n"
              "```python\nprint(1)\n```\n```yaml\na: 1\n```\n"
              "<!-- readme-test: server -->\n```bash\nsleep 1\n```\n")
    got = [(b.line, b.lang, b.mode, b.reason, b.text) for b in readme_blocks(sample)]
    assert got == [(3, "sh", "skip", "just a picture", "echo hi\n"),
                   (6, "python", "run", "", "print(1)\n"),
                   (13, "sh", "server", "", "sleep 1\n")]


@dataclass
class Env:
    """The fresh venv and the copy of the checkout the blocks run against."""

    root: Path
    checkout: Path
    environ: dict[str, str]
    python: Path

    def scratch(self, name: str) -> Path:
        path = self.root / "scratch" / name
        path.mkdir(parents=True)
        return path


def _copy_checkout(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info",
                                    "__pycache__", "*.so", "node_modules", ".mypy_cache",
                                    ".ruff_cache", ".pytest_cache", ".hypothesis")
    shutil.copytree(REPO, dest, ignore=ignore)


def _pip_installs(blocks: list[Block]) -> list[str]:
    """Every ``pip install ...`` command the README's runnable blocks give, in order."""
    out: list[str] = []
    for b in blocks:
        if b.mode == "skip" or b.lang != "sh":
            continue
        for line in b.text.splitlines():
            line = line.removeprefix("$ ")
            for part in re.split(r"&&|;|\|\|", line):
                part = part.split("#", 1)[0].strip()
                if part.startswith("pip install "):
                    out.append(part)
    return out


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Build the venv once per session, with only what the README installs."""
    root = tmp_path_factory.mktemp("readme")
    checkout = root / "checkout"
    _copy_checkout(checkout)
    venv = root / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                          text=True, timeout=300, check=False)
    if made.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot create a venv: {made.stderr}")
        pytest.skip(f"cannot create a venv here: {made.stderr.strip()[-200:]}")
    bindir = venv / "bin"
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("OTEL_", "CODEBOOK_", "PYTHON", "VIRTUAL_ENV", "PIP_"))}
    environ.update(PATH=f"{bindir}{os.pathsep}{environ.get('PATH', '')}",
                   VIRTUAL_ENV=str(venv), PIP_DISABLE_PIP_VERSION_CHECK="1")
    for command in _pip_installs(BLOCKS):
        done = subprocess.run(["bash", "-c", command], cwd=checkout, env=environ,
                              capture_output=True, text=True, timeout=INSTALL_SECONDS,
                              check=False)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    yield Env(root, checkout, environ, bindir / "python")


def _show(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"


def _run_transcript(block: Block, env: Env, cwd: Path) -> None:
    steps: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line.rstrip())
    assert steps, f"README.md:{block.line}: a transcript needs `$ ` commands"
    for command, expected in steps:
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env.environ,
                              capture_output=True, text=True, timeout=RUN_SECONDS, check=False)
        assert proc.returncode == 0, f"README.md:{block.line}: $ {command}\n{_show(proc)}"
        got = [x.rstrip() for x in proc.stdout.splitlines()]
        at = 0
        for want in (w for w in expected if w and w != "..."):
            while at < len(got) and got[at] != want:
                at += 1
            assert at < len(got), (
                f"README.md:{block.line}: $ {command}: the README shows {want!r}, "
                f"which the output lacks (in that order):\n{proc.stdout}")
            at += 1


def _run_server(block: Block, env: Env, cwd: Path) -> None:
    """Start the block, wait for the listening line, SIGTERM its process group, check it
    drained and stopped."""
    proc = subprocess.Popen(["bash", "-c", block.text], cwd=cwd, env=env.environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    out = b""
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + INSTALL_SECONDS
        while b'"event": "listening"' not in out:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, (
                f"README.md:{block.line}: no listening line\n{out.decode()[-3000:]}\n"
                f"{proc.stderr.read().decode()[-3000:]}")
            if sel.select(min(left, 0.5)):
                out += os.read(proc.stdout.fileno(), 65536)
        sel.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    err = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    assert "codebook serve: stopped" in err, f"README.md:{block.line}: not a clean stop\n{err}"


RUNNABLE = [b for b in BLOCKS if b.mode != "skip"]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_readme_block_runs(block: Block, env: Env) -> None:
    """The block works exactly as written, with only what the README installs."""
    installs = "pip install" in block.text
    cwd = env.checkout if installs else env.scratch(block.id)
    if block.mode == "server":
        _run_server(block, env, cwd)
    elif block.lang == "python":
        script = env.scratch(f"{block.id}-src") / "example.py"
        script.write_text(block.text, encoding="utf-8")
        proc = subprocess.run([str(env.python), str(script)], cwd=cwd, env=env.environ,
                              capture_output=True, text=True, timeout=RUN_SECONDS, check=False)
        assert proc.returncode == 0, f"README.md:{block.line}:\n{_show(proc)}"
    elif any(line.startswith("$ ") for line in block.text.splitlines()):
        _run_transcript(block, env, cwd)
    else:
        proc = subprocess.run(["bash", "-e", "-c", block.text], cwd=cwd, env=env.environ,
                              capture_output=True, text=True, timeout=RUN_SECONDS, check=False)
        assert proc.returncode == 0, f"README.md:{block.line}:\n{_show(proc)}"
