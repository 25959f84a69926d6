#!/usr/bin/env bash
# The C extensions under AddressSanitizer and UndefinedBehaviorSanitizer (gcc): build
# exporter/_wire.c and exporter/_hot.c instrumented, run their tests and the hostile-input
# tests against that build, then the differential fuzzer (tests/fuzz/fuzz_paths.py) for a
# bounded time. Fails on any test failure, divergence or sanitizer report.
#
#   tests/fuzz/sanitize.sh                  # CI: the tests, then 60 s of fuzzing
#   FUZZ_SECONDS=3600 tests/fuzz/sanitize.sh --fuzz-only   # by hand, longer
#
# Needs gcc with libasan/libubsan (Debian: part of gcc's libgcc-*-dev), python3-config or the
# running interpreter's headers, and the test dependencies (pip install '.[test]').
#
# The extensions are compiled directly with gcc, not through setup.py: build_ext puts its own
# flags last and does not link the sanitizer runtimes, so CFLAGS=-fsanitize=... would be
# silently lost. The interpreter itself is not instrumented, so the runtimes are preloaded,
# PYTHONMALLOC=malloc sends every Python object through ASan's allocator (pymalloc's arenas
# would hide a freed object), and freed memory is filled (max_free_fill_size): a freed object
# read by the uninstrumented interpreter (Py_INCREF, PyObject_Hash) then crashes instead of
# still looking valid. Leak checking is off: the interpreter keeps what it allocates.
set -euo pipefail
cd "$(dirname "$0")/../.."

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
PY="${PYTHON:-python}"
fuzz_only=0
[ "${1:-}" = "--fuzz-only" ] && fuzz_only=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A copy of the repository whose package holds the instrumented extensions; everything runs
# from there, so it is the `exporter` first on sys.path (sidecar children included), and
# tests/conftest.py is told not to put the installed extensions in their place.
tar --exclude=./.venv --exclude=./.git --exclude=node_modules --exclude=./build -cf - . |
  tar -xf - -C "$work"
find "$work/exporter" -name '*.so' -delete
suffix="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
flags=(-shared -fPIC -O1 -g -std=c11 -Wall -Wextra -Werror
       -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
       -I"$include")
for ext in _wire _hot; do
  gcc "${flags[@]}" "exporter/$ext.c" -o "$work/exporter/$ext$suffix"
done
cd "$work"

export CODEBOOK_SANITIZED_BUILD=1
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:max_free_fill_size=4096:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
export PYTHONMALLOC=malloc

# The instrumented build must be the one imported (and must load at all).
"$PY" -c '
import os
from exporter import _hot, _wire
for mod in (_hot, _wire):
    assert mod.__file__.startswith(os.getcwd()), f"{mod.__name__} from {mod.__file__}"
print("sanitize: instrumented", _wire.__file__, _hot.__file__)
'

if [ "$fuzz_only" = 0 ]; then
  "$PY" -m pytest -q -p no:cacheprovider tests/test_wire.py tests/test_hot.py \
    tests/test_sidecar_hostile.py tests/test_hostile_inproc.py
fi
"$PY" tests/fuzz/fuzz_paths.py --seconds "$FUZZ_SECONDS"
