"""CurveZMQ transport encryption of a kernel's channels (jupyter_client's ``transport_encryption``).

A connection info that carries ``curve_publickey`` and ``curve_secretkey`` (Z85 text, as
jupyter_client writes them) belongs to a kernel whose every socket is a Curve server with
that keypair; clients take the public key as the server key (jupyter_client/connect.py).
The provisioner makes the keypair (``provision``) the way jupyter_client's LocalProvisioner
does, the launcher writes it into the kernel's 0600 connection file on the node, and the
login-side sockets of remote-kernels itself (the queued kernel's stand-in, the relay) use
it through ``serve`` and ``connect_to``.  Used in the server's process only (pyzmq).
"""

from __future__ import annotations

FIELDS = ("curve_publickey", "curve_secretkey")


def keys(info: dict) -> dict[str, str]:
    """{curve_publickey, curve_secretkey} as text from a connection info; {} without encryption."""
    found = {name: info.get(name) for name in FIELDS}
    if not all(found.values()):
        return {}
    return {name: value.decode("ascii") if isinstance(value, bytes) else str(value) for name, value in found.items()}


def wanted(km) -> bool:
    """Whether jupyter_client's policy on manager ``km`` asks for Curve keys: ``required``, or
    ``auto`` with a kernelspec that declares ``"curve"`` in ``metadata.supported_encryption``.
    False for a jupyter_client without the policy."""
    policy = getattr(km, "_transport_encryption_policy", None)
    if policy is None:
        return False
    value = policy()
    return value == "required" or (value == "auto" and km._kernel_supports_curve_encryption())


def provision(km) -> None:
    """Give manager ``km`` a Curve keypair when its policy wants one and it has none yet (a
    restart keeps the kernel's keys, as jupyter_client keeps its HMAC key)."""
    if wanted(km) and km.curve_publickey is None:
        import zmq

        km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()


def serve(sock, info: dict) -> None:
    """Make ``sock`` (not bound yet) a Curve server with the kernel's keypair, if info has one."""
    found = keys(info)
    if found:
        sock.curve_secretkey = found["curve_secretkey"].encode()
        sock.curve_publickey = found["curve_publickey"].encode()
        sock.curve_server = True


def connect_to(sock, info: dict) -> None:
    """Make ``sock`` (not connected yet) a Curve client of the kernel, if info has its keys:
    the kernel's public key as the server key, a fresh keypair of its own."""
    found = keys(info)
    if found:
        client_of(sock, found["curve_publickey"])


def client_of(sock, server_key: str) -> None:
    """Make ``sock`` (not connected yet) a Curve client of the server whose public key this is."""
    import zmq

    public, secret = zmq.curve_keypair()
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.curve_serverkey = server_key.encode()
