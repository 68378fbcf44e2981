"""The life of a training run, shared by every trainer (:mod:`.gan`, :mod:`.encoder_loop`, :mod:`.domain`).

- :func:`merge_resume_options`: the options of a resumed run, the checkpoint's under the ones given, refusing
  changes a resume may not make;
- :func:`resolve_run_dir`: where a run writes: a new directory, the resumed run's own one, or a fork;
  :func:`decide_run_dir` asks it on rank 0 only and tells every rank; :func:`make_run_dir` creates it;
- :func:`record_options` / :func:`write_options_record`: ``options.json``, or ``options-resume-N.json`` for each
  resumption in place;
- :func:`stop_on_signals`: SIGINT / SIGTERM ask the run to save a checkpoint after the current step and stop;
- :func:`process_group`: check the options for the number of processes and join the process group (torchrun) for
  the length of a run.

The trainers raise :class:`clcae.training.errors.ConfigError` for bad options; the functions here raise the class
they are given (``error``: that one, or :class:`~clcae.training.state.RunDirError` by default).
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

from .. import distributed as du
from ..errors import AboutOption, option_message
from .errors import ConfigError
from .state import (CHECKPOINT_DIR, RunDirError, check_new_run_dir, create_run_dir, diff_options,
                    run_dir_of_checkpoint, write_json_new)

__all__ = ["merge_resume_options", "resolve_run_dir", "decide_run_dir", "make_run_dir", "write_options_record",
           "record_options", "stop_on_signals", "process_group"]


def merge_resume_options(saved: Mapping[str, Any], given: Mapping[str, Any], known: Collection[str],
                         may_change: Collection[str], source: str | os.PathLike,
                         error: type[Exception] = ConfigError) -> dict[str, Any]:
    """The options of a resumed run: the checkpoint's options overridden by the ones given explicitly.

    Args:
        saved: the options stored in the checkpoint (names outside ``known`` are dropped: options that no longer
            exist).
        given: the options set explicitly for this run (names of ``known``).
        known: every option name of the trainer.
        may_change: the options a resume may change; any other given option must equal the checkpoint's value
            (compared as JSON, so a path equals its string).
        source: the checkpoint, named in the error.
        error: the exception class raised for a forbidden change (one of :class:`~clcae.errors.AboutOption`, so
            that a command line names the flags).
    Returns:
        ``{**saved, **given}`` (``saved`` restricted to ``known``).
    Raises:
        error: about option ``resume``, one line per forbidden change, with the option, the checkpoint's value and
            the value given.
    """
    saved = {k: v for k, v in saved.items() if k in known}
    conflicts = {k: v for k, v in diff_options(saved, given).items() if k not in may_change}
    if conflicts:
        lines = [f"  {k}: checkpoint has {a!r}, you passed {b!r}" for k, (a, b) in sorted(conflicts.items())]
        raise _error(error, "resume", f"{source}: these options differ from the checkpoint's and cannot change on "
                     "resume:\n" + "\n".join(lines) + "\ndrop them (the checkpoint's values are used) or start a new "
                     "run with out NEW_DIR", (*sorted(conflicts), "out"))
    return {**saved, **dict(given)}


def resolve_run_dir(out: str | os.PathLike, resume_path: Path | None,
                    error: type[Exception] = RunDirError) -> tuple[Path, bool]:
    """Where a run writes, as ``(run_dir, in_place)``; creates nothing.

    - a new run (``resume_path`` is ``None``): ``out``, which must be given and must not exist or be empty;
    - a resumed run without ``out``, or with ``out`` naming the checkpoint's own run directory: that directory,
      ``in_place=True`` (the run continues where it was);
    - a resumed run with another ``out``: a fork into ``out``, which must be new or empty.

    Args:
        out: the ``out`` option (``''``: not given).
        resume_path: the checkpoint file being resumed, or ``None``.
        error: the exception class raised for every problem (the message says what to pass; one of
            :class:`~clcae.errors.AboutOption`, so that a command line names the flags).
    Raises:
        error: no ``out`` for a new run, a checkpoint outside any run directory without ``out``, or an ``out``
            that exists and is not empty (:func:`~clcae.training.state.check_new_run_dir`'s message).
    """
    if resume_path is not None:
        source = run_dir_of_checkpoint(resume_path)
        if not out:
            if source is None:
                raise _error(error, "resume", f"{resume_path}: the checkpoint is not inside a run directory; pass "
                             "out NEW_DIR for the continued run", ("out",))
            return source, True
        if source is not None and Path(out).resolve() == source.resolve():
            return source, True
    elif not out:
        raise _error(error, "out", "is required: a new (or empty) run directory")
    try:
        return check_new_run_dir(out), False
    except RunDirError as e:
        if error is RunDirError:
            raise
        raise _error(error, e.option or "out", e.problem or str(e), e.mentions) from e


def _error(error: type[Exception], option: str, problem: str, mentions: Collection[str] = ()) -> Exception:
    """An ``error`` about ``option``: structured (:meth:`~clcae.errors.AboutOption.about`) when the class takes
    part, else a plain message."""
    if issubclass(error, AboutOption):
        return error.about(option, problem, mentions)
    return error(option_message(option, problem))


def decide_run_dir(out: str | os.PathLike, resume_path: Path | None,
                   error: type[Exception] = RunDirError) -> tuple[Path, bool]:
    """:func:`resolve_run_dir` on rank 0, its answer (or its error) on every rank: one decision per run.

    Another rank checking for itself could find the directory already created by rank 0 and refuse it. Without a
    process group this is :func:`resolve_run_dir`. Raises ``error`` on every rank when rank 0's check fails.
    """
    decision: tuple[str, bool, tuple | None] = ("", False, None)
    if du.is_main_process():
        try:
            run_dir, in_place = resolve_run_dir(out, resume_path, error)
            decision = (str(run_dir), in_place, None)
        except error as e:  # sent as its parts, so that every rank raises the same structured error
            decision = ("", False, (getattr(e, "option", None), getattr(e, "problem", None),
                                    tuple(getattr(e, "mentions", ())), str(e)))
    decision = du.broadcast_object(decision)
    if decision[2] is not None:
        option, problem, mentions, message = decision[2]
        raise _error(error, option, problem, mentions) if option is not None else error(message)
    return Path(decision[0]), bool(decision[1])


def make_run_dir(run_dir: Path, in_place: bool) -> Path:
    """Create the run directory that :func:`resolve_run_dir` chose, and its ``checkpoints/`` folder; returns that.

    A new run or a fork creates ``run_dir`` (refusing a non-empty one); a run resumed in place (``in_place``)
    keeps its directory as it is.
    """
    if not in_place:
        create_run_dir(run_dir)
    checkpoints = run_dir / CHECKPOINT_DIR
    checkpoints.mkdir(parents=True, exist_ok=True)
    return checkpoints


def write_options_record(run_dir: Path, record: Mapping[str, Any], in_place: bool) -> Path:
    """Write a run's options record as JSON (never replacing a file) and return its path.

    ``run_dir/options.json`` for a new run or a fork; for a run resumed in its own directory the first free
    ``run_dir/options-resume-N.json`` (N = 1, 2, ...), so every session of a run keeps its record.
    """
    path = run_dir / "options.json"
    n = 0
    while in_place and (n == 0 or path.exists()):
        n += 1
        path = run_dir / f"options-resume-{n}.json"
    return write_json_new(path, record)


def record_options(run_dir: Path, record: Mapping[str, Any], in_place: bool,
                   resumed_at: Mapping[str, Any] | None = None) -> Path:
    """The options record of a session: ``options.json`` of a new run (``resumed_at`` None) or of a fork, with
    ``resumed_at`` (e.g. ``{'step': ...}``) for a resumed session, ``options-resume-N.json`` when in place."""
    if resumed_at is None:
        return write_options_record(run_dir, record, in_place=False)
    return write_options_record(run_dir, dict(record, resumed_at=dict(resumed_at)), in_place)


@contextmanager
def stop_on_signals(request_stop: Callable[[str], None], log: Callable[[str], None],
                    stopping: Callable[[], bool] | None = None) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM ask the run to save a checkpoint after the current step and stop.

    Args:
        request_stop: called from the handler with the signal's name (``'SIGINT'`` or ``'SIGTERM'``); the loop
            reads it after each step.
        log: gets one line saying what will happen.
        stopping: returns whether a stop was already requested; given, a second SIGINT then raises
            ``KeyboardInterrupt`` (abort without saving). ``None``: every signal only requests the stop.
    Outside the main thread, where handlers cannot be installed, it does nothing. The previous handlers are
    restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hint = " (press Ctrl-C again to abort without saving)" if stopping is not None else ""

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if stopping is not None and stopping() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort without saving
        request_stop(name)
        log(f"{name} received: saving a checkpoint after this step, then exiting{hint}")

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


@contextmanager
def process_group(opts: Any, error: type[Exception] = ValueError) -> Iterator[du.DistInfo]:
    """The processes of a run: validate ``opts`` for their number, join their group, leave it on exit.

    Args:
        opts: the run's options, with ``validate(world_size)``, ``device`` (``'auto'``, ``'cpu'`` or ``'cuda'``) and
            ``dist_timeout`` (seconds a collective may wait).
        error: the exception class raised when the process group cannot start.
    Yields:
        this process's :class:`~clcae.distributed.DistInfo` (rank, world size, device); one process
        without torchrun.
    Raises:
        whatever ``opts.validate`` raises for bad options (the world size is ``WORLD_SIZE``, 1 without torchrun);
        error: the process group did not start (the message says why).
    """
    opts.validate(int(os.environ.get("WORLD_SIZE", "1") or 1))
    try:
        info = du.init_distributed(opts.device, timeout_s=opts.dist_timeout)
    except du.DistributedError as e:
        raise (error.retold(e) if issubclass(error, AboutOption) else error(str(e))) from e
    try:
        yield info
    finally:
        du.cleanup()
