"""The optional C parts of fcgipool (everything else is in pyproject.toml); fcgipool.speedups says why and how.

``optional=True``: without a C compiler and Python's headers the build only warns, and fcgipool runs the pure
Python twins (the arbiter's start log says so; ``fcgipool --version`` names which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("fcgipool.protocol._cparams", ["fcgipool/protocol/_cparams.c"], optional=True),
        Extension("fcgipool.scoreboard._cslot", ["fcgipool/scoreboard/_cslot.c"], optional=True),
        Extension("fcgipool._crequestlog", ["fcgipool/_crequestlog.c", "fcgipool/_crequestlog_lines.c"],
                  depends=["fcgipool/_crequestlog.h"], optional=True),
    ]
)
