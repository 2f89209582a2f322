"""The compiled VNF hot path; everything else is declared in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nfv.datapath._fast",
            ["nfv/datapath/_fast.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        )
    ]
)
