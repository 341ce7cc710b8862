"""What of the Jupyter side's environment reaches a kernel.

The job never inherits the server's environment: each scheduler adapter submits so that
the job starts from the environment the scheduler gives a job of its own (docs/security.md).
On top of that, the kernel gets the spec's ``env`` option (exported by the batch script)
and what ``kernel_env`` returns, sent over the launcher's control channel, so that no
value of it is written into the batch script or the scheduler's records.
"""

from __future__ import annotations

from string import Template
from typing import Mapping

# The Jupyter variables a kernel needs from the server: JPY_SESSION_NAME, the notebook's
# path (jupyter_server sets it per kernel; ipykernel makes it __session__).  Not passed:
# JPY_PARENT_PID (the launcher sets its own), JPY_API_TOKEN (a JupyterHub secret), nor any
# JUPYTER_*: the login side's paths (JUPYTER_RUNTIME_DIR, JUPYTER_CONFIG_DIR, JUPYTER_PATH...)
# need not exist on a node, and JUPYTER_TOKEN or JUPYTER_GATEWAY_AUTH_TOKEN are secrets.
PASS_ENV = ("JPY_SESSION_NAME",)


def kernel_env(spec_env: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables sent to the launcher for the kernel: PASS_ENV, and the keys of the
    kernelspec's ``env`` stanza (``spec_env``).

    A stanza key's value is ``environ``'s, where the frontend already applied the stanza (as
    jupyter_client does, ``${VAR}`` substituted); else the stanza's value, substituted from
    ``environ`` the same way.
    """
    env = {k: environ[k] for k in PASS_ENV if k in environ}
    for key, value in spec_env.items():
        env[key] = environ[key] if key in environ else Template(value).safe_substitute(environ)
    return env
