"""Errors that reach users. Each message says what went wrong, why, and how to fix it;
the CLI prints them without a traceback."""


class HfExtError(Exception):
    """Base class of the errors hf_ext raises on purpose."""


class InputError(HfExtError, ValueError):
    """Bad user input: a missing column, an empty dataset, a budget larger than the pool..."""


class RecipeError(HfExtError, ValueError):
    """A malformed recipe: unknown key, wrong type, missing file."""
