"""The error every part of a kernel's start raises: one line naming the cause and the fix."""


class KernelStartError(RuntimeError):
    """The kernel could not be started (or reached); the message names the cause and the fix."""
