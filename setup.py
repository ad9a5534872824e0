"""Build hook for the optional C accelerator of the tick hot path (metadata is in pyproject.toml).

`ticker_worker.kite._tickjson` turns a Kite frame into the ticks' JSON in one pass. It is
optional: without a compiler the install still succeeds and the pure-Python decoder is used.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ticker_worker.kite._tickjson",
            ["ticker_worker/kite/_tickjson.c"],
            depends=["ticker_worker/kite/_fastdouble.h"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
