"""The C extension exporter._wire (the OTLP trace fast path); metadata is in pyproject.toml.

optional=True: where no C compiler is available the install still succeeds and the sidecar
uses the pure-Python message path (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exporter._wire",
            sources=["exporter/_wire.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        )
    ]
)
