"""remote-kernels: Jupyter kernels on HPC compute nodes, through the batch scheduler."""

__version__ = "0.1.0.dev0"


def _jupyter_labextension_paths() -> list[dict]:
    """The prebuilt JupyterLab extension (labextension/ builds it; the wheel installs it under
    share/jupyter/labextensions/remote-kernels-jupyterlab)."""
    return [{"src": "labextension", "dest": "remote-kernels-jupyterlab"}]
