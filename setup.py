"""The optional C extension; everything else about the build is in pyproject.toml.

``moss._kernels`` (src/moss/_kernels.c and _hnsw.c) holds compiled inner loops. It is optional: where it does
not build (no C compiler), the install goes on and moss runs the same arithmetic in numpy
(``moss.keyword.KERNEL`` says which is in use). ``-ffp-contract=off`` keeps every float operation
rounded as numpy rounds it, so both paths give the same bits.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "moss._kernels",
            sources=["src/moss/_kernels.c", "src/moss/_hnsw.c"],
            depends=["src/moss/_kernels.h"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
