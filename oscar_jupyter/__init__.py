"""oscar-jupyter: offload notebook cells to HPC clusters through OSCAR and interLink."""

__version__ = "0.1.0"
