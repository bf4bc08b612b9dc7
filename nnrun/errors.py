"""The two kinds of failure the command line maps to exit codes.

- `UserInputError` (exit 2): the user's input was wrong: a config key or value, a command-line
  option, a missing or corrupt data file. The message names what and where.
- `RunFailed` (exit 1): the run itself failed (diverged, interrupted); its state was saved.
  `RunStopped`, a `RunFailed`, is a run stopped on request (Ctrl-C, SIGTERM, SIGHUP): not a failure
  to the user, but exit 1 all the same (the run did not finish).

`did_you_mean` ends such a message with the names a misspelled one was most likely meant to be.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


class UserInputError(Exception):
    """Bad input from the user: config, option or data file. Exit code 2."""


class RunFailed(Exception):
    """A run that started but could not finish; state is saved before this is raised. Exit code 1."""


class RunStopped(RunFailed):
    """A run stopped by a signal the user (or a scheduler) sent; state is saved. Exit code 1, reported as a
    stop rather than a failure."""


def close_matches(word: str, candidates: Iterable[str], aliases: Mapping[str, str] | None = None,
                  n: int = 3) -> list[str]:
    """The candidates `word` was most likely meant to be: the name an alias stands for (`kaiming` -> `he`),
    else the closest by `difflib` (at most `n`, best first)."""
    candidates = list(dict.fromkeys(candidates))
    folded = str(word).strip().lower()
    if aliases and folded in aliases:
        return [aliases[folded]]
    exact = [c for c in candidates if c.lower() == folded]
    if exact:
        return exact
    # A dotted key given by its last part (`lr` for `optim.lr`, `hidden` for `model.hidden`).
    tail = [c for c in candidates if c.lower().endswith("." + folded)]
    if tail:
        return tail[:n]
    return difflib.get_close_matches(str(word), candidates, n=n, cutoff=0.6)


def did_you_mean(word: str, candidates: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """`"; did you mean 'he'?"`, or "" when nothing is close (for the end of an error message)."""
    matches = close_matches(word, candidates, aliases)
    if not matches:
        return ""
    return f"; did you mean {' or '.join(repr(m) for m in matches)}?"


MAX_ECHO = 80
"""Characters of a value a message repeats (the rest is elided)."""


def shorten(text: str, limit: int = MAX_ECHO) -> str:
    """`text` cut to `limit` characters with a marker, so messages never echo a huge input."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def echo(value: Any) -> str:
    """`repr(value)` shortened for a message; a value Python will not write out (an integer of more than
    `sys.get_int_max_str_digits()` digits somewhere in it) is described instead of raising."""
    try:
        return shorten(repr(value))
    except ValueError:
        return f"a {type(value).__name__} holding an integer too long to print"
