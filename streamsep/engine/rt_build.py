"""Builds ``streamsep.engine._rt`` (the rings and the device callback in C) with cffi.

setup.py runs it at install time (``cffi_modules``, paths relative to the repository root);
``python streamsep/engine/rt_build.py`` rebuilds the module in place.
"""

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = (HERE / "rt.h").read_text()

ffibuilder = FFI()
ffibuilder.cdef(HEADER)
ffibuilder.set_source(
    "streamsep.engine._rt",
    '#include <stdint.h>\n#include "rt.h"\n',
    sources=["streamsep/engine/rt.c"],
    include_dirs=["streamsep/engine"],
    extra_compile_args=["-O2", "-std=c11"],
    libraries=["dl"] if sys.platform.startswith("linux") else [],  # dlopen before glibc 2.34
)

if __name__ == "__main__":
    import os

    os.chdir(HERE.parent.parent)
    ffibuilder.compile(verbose=False)
