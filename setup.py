"""The compiled modules: the VNF hot path, and route repair (sdn.compile.routing keeps the
Python reference of it); everything else is declared in pyproject.toml.

The AF_XDP loop (_xsk.c) is built in where libxdp's headers are installed (`make setup`
installs them); without them the module has the TPACKET loop only and VNFs use that."""

from pathlib import Path

from setuptools import Extension, setup

XSK = Path("/usr/include/xdp/xsk.h").exists() and Path("/usr/include/bpf/libbpf.h").exists()

setup(
    ext_modules=[
        Extension(
            "nfv.datapath._fast",
            ["nfv/datapath/_fast.c", *(["nfv/datapath/_xsk.c"] if XSK else [])],
            depends=["nfv/datapath/_fast.h"],
            define_macros=[("HAVE_XSK", "1")] if XSK else [],
            libraries=["xdp", "bpf"] if XSK else [],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        ),
        Extension(
            "sdn.compile._routes",
            ["sdn/compile/_routes.c"],
            libraries=["m"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        ),
    ]
)
