"""Errors about an option, told in the library's words; the command line tells them with its flags.

The library speaks of its own arguments: ``batch must be >= 2; got 1``. An error that is about one option carries
it in a structured way, so that :func:`clcae.cli.report_error` can print the same error with the flag
(``--batch must be >= 2; got 1``) without the library knowing that flags exist:

- ``option``: the option's library name (``'batch'``, ``'lpips_weights'``);
- ``problem``: what is wrong, to follow the name (``'must be >= 2; got 1'``, or ``': no such file'``);
- ``mentions``: option names that the problem speaks of (``('method',)`` in ``'align is CLCAE's stage 1; method
  e4e has only the invert stage'``), which a command line also turns into flags. They are found as whole words,
  not inside paths, file names or quotes, so a problem should not use a mentioned name as a plain word.

Any exception class takes part by mixing in :class:`AboutOption` and building its instance with
:meth:`AboutOption.about`; its type (and so what callers catch) stays its own. Below every other module: it
imports nothing from the package.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, TypeVar

__all__ = ["AboutOption", "option_message"]

Error = TypeVar("Error", bound="AboutOption")


def option_message(option: str, problem: str) -> str:
    """``option`` followed by ``problem``: a space between them unless the problem starts with punctuation
    (``'steps' + 'must be >= 1'`` -> ``'steps must be >= 1'``; ``'data' + ': no such folder'`` ->
    ``'data: no such folder'``)."""
    return option + problem if problem[:1] in (":", ",", ";", ".") else f"{option} {problem}"


class AboutOption:
    """Mix-in for an exception about one option (see the module docstring). ``option`` is ``None`` for an
    instance built from a plain message."""

    option: str | None = None
    problem: str | None = None
    mentions: tuple[str, ...] = ()

    @classmethod
    def about(cls: type[Error], option: str, problem: str, mentions: Iterable[str] = ()) -> Error:
        """An instance whose message is :func:`option_message` of ``option`` and ``problem``, keeping the three
        parts as attributes."""
        error = cls(option_message(option, problem))  # type: ignore[call-arg]
        error.option, error.problem, error.mentions = option, problem, tuple(mentions)
        return error

    @classmethod
    def retold(cls: type[Error], error: BaseException) -> Error:
        """An instance of ``cls`` telling what ``error`` tells: about the same option when ``error`` is about one,
        else with its message (for a caller that turns another layer's error into its own type)."""
        if isinstance(error, AboutOption) and error.option is not None and error.problem is not None:
            return cls.about(error.option, error.problem, error.mentions)
        return cls(str(error))  # type: ignore[call-arg]

    def told_with(self, name: Callable[[str], str]) -> str:
        """The message with every option name (``option`` and ``mentions``) spelled by ``name`` (e.g. a
        command-line flag); the plain message when the error names no option."""
        if self.option is None or self.problem is None:
            return str(self)
        problem = self.problem
        for other in self.mentions:
            problem = re.sub(rf"(?<![\w./'\"-]){re.escape(other)}(?![\w/'\"-]|\.\w)", lambda _: name(other), problem)
        return option_message(name(self.option), problem)
