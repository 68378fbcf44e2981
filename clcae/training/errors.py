"""The errors every trainer raises (the generator, the domain network and the encoders): one type per kind of
failure, so the scripts and callers catch one name whichever trainer they run."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from ..errors import AboutOption, option_message

__all__ = ["ConfigError", "OptionError", "NonFiniteLossError"]


class ConfigError(AboutOption, ValueError):
    """Bad options, config files, data or run directory, found before any work; the message says which and how to
    fix it. One about a single option is built with ``ConfigError.about(option, problem)`` (or is an
    :class:`OptionError`), so that a command line can name the flag (:mod:`clcae.errors`)."""


class OptionError(ConfigError):
    """One option has a bad value. ``option`` is its library name (``'batch'``), ``problem`` what is wrong
    (``'must be >= 2; got 1'``); the message is ``'batch must be >= 2; got 1'``. ``mentions``: other option names
    the problem speaks of. A command line names the flags instead (:func:`clcae.cli.report_error` prints
    ``--batch must be >= 2; got 1``)."""

    def __init__(self, option: str, problem: str, mentions: Iterable[str] = ()):
        super().__init__(option_message(option, problem))
        self.option, self.problem, self.mentions = option, problem, tuple(mentions)

    @classmethod
    def about(cls, option: str, problem: str, mentions: Iterable[str] = ()) -> "OptionError":
        return cls(option, problem, mentions)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf and training stopped; the message names the step, the values and the last good
    checkpoint. Where the trainer knows them: ``step``, ``nimg`` (images seen), ``losses`` (``{name: value}``) and
    ``checkpoint`` (the last good one, or None)."""

    def __init__(self, message: str, step: int | None = None, nimg: int | None = None,
                 losses: Mapping[str, float] | None = None, checkpoint: Path | None = None):
        super().__init__(message)
        self.step, self.nimg, self.checkpoint = step, nimg, checkpoint
        self.losses = dict(losses) if losses is not None else {}
