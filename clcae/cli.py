"""What the command-line scripts in ``scripts/`` share: argparse types, error reporting and exit statuses.

Every script returns its exit status from ``main(argv) -> int``:

===========  ========================================================================================
status       meaning
===========  ========================================================================================
0            done (:data:`EXIT_OK`)
1            the work failed: a NaN/Inf loss, a dead process, every input bad (:data:`EXIT_FAILED`)
2            a problem with the arguments or the files they name (:data:`EXIT_USAGE`)
130 / 143    stopped by SIGINT / SIGTERM (:data:`EXIT_SIGINT`, :data:`EXIT_SIGTERM`)
===========  ========================================================================================

- :func:`positive_int`, :func:`non_negative_int`: argparse ``type=`` functions with a clear message;
  :func:`arg_type` makes one of a library parser that raises ValueError;
- :func:`report_error`: print ``error: MESSAGE`` to stderr and return a status; an error about an option
  (:mod:`clcae.errors`) is told with its flag (:func:`command_line_message`);
- :func:`exit_statuses`: a decorator that turns a ``main``'s exceptions into those statuses and messages;
- :func:`stop_exit_status`: the status of a training run that stopped early (on a signal);
- :func:`summary_exit_status`: the status of a per-image run from its summary (``invert.py``, ``edit.py``).

Devices: :func:`clcae.jobs.resolve_device` turns ``--device`` (``auto``, ``cpu``, ``cuda:N``) into a
``torch.device`` for every script.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, Callable, Mapping, TypeVar

from .training.options import flag  # the one spelling of a flag, shared with the argparse builder

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_SIGINT", "EXIT_SIGTERM", "ABORTED_WITHOUT_SAVING",
           "arg_type", "positive_int", "non_negative_int", "report_error", "flag", "command_line_message",
           "exit_statuses", "stop_exit_status", "summary_exit_status"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
#: What the training scripts print when a second Ctrl-C aborts a run without saving.
ABORTED_WITHOUT_SAVING = "aborted without saving (the last checkpoint is intact)"

MainFunction = TypeVar("MainFunction", bound=Callable[..., int])


# ---------------------------------------------------------------------------------------------------- argparse types
def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from a library parser that raises ValueError (e.g.
    :func:`clcae.editing.specs.parse_layers`): its message becomes the usage error (for an error about an option,
    only its problem: argparse names the flag)."""
    from .errors import AboutOption

    @functools.wraps(parse)
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            about = isinstance(e, AboutOption) and e.problem is not None
            raise argparse.ArgumentTypeError(e.problem.lstrip(":;, ") if about else str(e)) from None

    return convert


def positive_int(text: str) -> int:
    """An int >= 1 (argparse ``type=``); anything else is a usage error naming the value."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An int >= 0 (argparse ``type=``); anything else is a usage error naming the value."""
    return _int_at_least(text, 0)


# ---------------------------------------------------------------------------------------------------- exit statuses
def report_error(error: object, status: int = EXIT_USAGE) -> int:
    """Print ``error: ERROR`` to stderr and return ``status`` (default :data:`EXIT_USAGE`), as in
    ``return report_error(e)``. An error about an option (:class:`clcae.errors.AboutOption`, e.g.
    :class:`~clcae.training.errors.OptionError`) is told with the flags (:func:`command_line_message`):
    ``--batch must be >= 2``."""
    print(f"error: {command_line_message(error)}", file=sys.stderr)
    return status


def command_line_message(error: object) -> str:
    """The message of ``error`` as a script tells it: an error about an option (:class:`clcae.errors.AboutOption`)
    names its flag and the flags of the options it mentions (``batch must be >= 2`` -> ``--batch must be >= 2``);
    anything else is ``str(error)``."""
    from .errors import AboutOption

    return error.told_with(flag) if isinstance(error, AboutOption) else str(error)


def exit_statuses(usage: tuple[type[BaseException], ...] = (), failure: tuple[type[BaseException], ...] = (),
                  interrupted: str | None = None) -> Callable[[MainFunction], MainFunction]:
    """Decorate a script's ``main(argv) -> int`` so that its exceptions end it with a message and a status.

    Args:
        usage: exceptions for bad arguments or input files: ``error: MESSAGE`` on stderr, status 2 (checked
            first).
        failure: exceptions for work that failed (e.g. a NaN loss): ``error: MESSAGE``, status 1.
        interrupted: with a message, ``KeyboardInterrupt`` prints it to stderr and returns 130; ``None`` lets it
            propagate.
    A :class:`~clcae.distributed.DistributedError` (another process died or timed out) always prints
    ``error (rank R): MESSAGE`` and returns 1. Any other exception propagates; ``SystemExit`` from argparse too.
    """
    from .distributed import DistributedError

    def decorate(main: MainFunction) -> MainFunction:
        @functools.wraps(main)
        def wrapped(*args: Any, **kwargs: Any) -> int:
            try:
                return main(*args, **kwargs)
            except usage as e:
                return report_error(e, EXIT_USAGE)
            except failure as e:
                return report_error(e, EXIT_FAILED)
            except DistributedError as e:
                print(f"error (rank {os.environ.get('RANK', '0')}): {command_line_message(e)}", file=sys.stderr)
                return EXIT_FAILED
            except KeyboardInterrupt:
                if interrupted is None:
                    raise
                print(interrupted, file=sys.stderr)
                return EXIT_SIGINT

        return wrapped  # type: ignore[return-value]

    return decorate


def stop_exit_status(stop_reason: str | None) -> int:
    """The status of a training run that stopped before its end: 130 after SIGINT, 143 after SIGTERM, 0 for any
    other reason (e.g. a requested stop after N steps)."""
    return {"SIGINT": EXIT_SIGINT, "SIGTERM": EXIT_SIGTERM}.get(stop_reason or "", EXIT_OK)


def summary_exit_status(summary: Mapping[str, Any]) -> int:
    """The status of a run over many inputs, from its summary (``interrupted``, ``failed``, ``done``, ``skipped``):
    130 when interrupted, 1 when every input failed (none done or skipped), else 0 (bad inputs are reported, not
    fatal)."""
    if summary["interrupted"]:
        return EXIT_SIGINT
    if summary["failed"] and not summary["done"] and not summary["skipped"]:
        return EXIT_FAILED
    return EXIT_OK
