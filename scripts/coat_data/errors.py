"""The error a user of prepare_data.py sees: a message naming the file (and line) and what was expected."""


class DataError(Exception):
    """Bad input, tokenizer or arguments; the message is complete (file, line, what was expected).

    Raised in worker processes too: it pickles as its message, so the main process re-raises it unchanged.
    """


def at(source, line, message):
    """A DataError for line `line` (1-based) of `source`."""
    return DataError(f"{source}:{line}: {message}")
