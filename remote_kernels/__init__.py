"""remote-kernels: Jupyter kernels on HPC compute nodes, through the batch scheduler."""

__version__ = "0.1.0.dev0"
