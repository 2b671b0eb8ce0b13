# The real-time core (streamsep/engine/rt.c) is compiled here; everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["streamsep/engine/rt_build.py:ffibuilder"])
