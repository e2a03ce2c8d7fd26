"""The one compiled part: tracker/capture/_reduce.c, the stats worker's fused reductions.

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no C
compiler, as in the server's slim image) the stats fall back to NumPy (tracker/capture/stats.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tracker.capture._reduce",
            sources=["tracker/capture/_reduce.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
