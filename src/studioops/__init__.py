"""StudioOps infra: the operational backbone of StudioOps AI.

The library is the product; the CLI (`studioops`), the API and the Makefile are thin faces over it.
"""

__version__ = "0.1.0"
