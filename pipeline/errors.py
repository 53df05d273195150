"""Errors a user can act on, and the command-line wrapper that reports them.

Every command of the project ends a bad request the same way: exit status 2
and one line that says what to do. Library code raises `UsageError` (or a
subclass); `run_cli` turns it into that line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2


class UsageError(Exception):
    """A request the project cannot carry out as given; the message says how to fix it."""


class MissingDependency(UsageError):
    """An optional library that one feature needs is not installed."""


def require(module: str, package: str, feature: str):
    """Imports `module`, or raises MissingDependency naming the pip package to install.

    Protection libraries are imported only by the protection that needs them,
    so training still runs where installing them is hard (for example a Jetson
    with NVIDIA's own TensorFlow build).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{feature} needs the package {package!r} ({exc}); install it with "
            f"'pip install {package}' or run 'make venv'"
        ) from None


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit with status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def choice_error(kind: str, value: object, choices: Sequence[str]) -> UsageError:
    return UsageError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Runs a command's main function; a UsageError becomes one line and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return main(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: start the same command again to resume", file=sys.stderr)
        return 130
