"""Errors raised while reading weights written by other frameworks."""


class WeightsFormatError(ValueError):
    """A weights file is truncated, corrupted, or not in the expected layout.

    The message names the file (or the foreign layer/key) and what is wrong.
    """


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint asks to load a global outside the tensor allowlist.

    Such a file could run arbitrary code when unpickled, so nothing in it is
    executed: reading stops at the first refused global.
    """
