"""mosic: the shared core of the MoSiC pipeline (configuration, registries, frame sources)."""

__version__ = "0.1.0"


class MosicError(Exception):
    """An error caused by the user's input (data, store, configuration).

    Command-line entry points print its message without a traceback and exit non-zero.
    """
