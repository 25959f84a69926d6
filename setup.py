"""The C extensions exporter._wire (the sidecar's OTLP trace fast path) and exporter._hot (the
span processor's on_end fast path); metadata is in pyproject.toml.

optional=True: where no C compiler is available the install still succeeds and the sidecar
uses the pure-Python paths (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exporter._wire",
            sources=["exporter/_wire.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        ),
        Extension(
            "exporter._hot",
            sources=["exporter/_hot.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        ),
    ]
)
