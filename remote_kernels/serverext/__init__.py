"""The Jupyter server extension behind the JupyterLab extension (labextension/): REST handlers
under ``/remote-kernels/`` (handlers.py) over this server's kernels and the user's registry
(overview.py).

Enabled by ``etc/jupyter/jupyter_server_config.d/remote_kernels.json`` (shipped in the wheel),
or by hand: ``jupyter server extension enable remote_kernels.serverext``.
"""

from __future__ import annotations


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "remote_kernels.serverext"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from .handlers import setup_handlers

    setup_handlers(serverapp.web_app)
    serverapp.log.info("remote-kernels server extension loaded: /remote-kernels/ handlers")
