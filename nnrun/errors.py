"""The two kinds of failure the command line maps to exit codes.

- `UserInputError` (exit 2): the user's input was wrong: a config key or value, a command-line
  option, a missing or corrupt data file. The message names what and where.
- `RunFailed` (exit 1): the run itself failed (diverged, interrupted); its state was saved.
"""


class UserInputError(Exception):
    """Bad input from the user: config, option or data file. Exit code 2."""


class RunFailed(Exception):
    """A run that started but could not finish; state is saved before this is raised. Exit code 1."""
