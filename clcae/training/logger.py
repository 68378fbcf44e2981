"""Training logs on rank 0: a tqdm bar, TensorBoard scalars and images, ``stats.jsonl`` and ``log.txt``.

:class:`TrainLogger` does nothing on other ranks (``enabled=False``), so the loop calls it unconditionally. Scalars
go to TensorBoard (x axis: images seen) and, one JSON object per line, to ``stats.jsonl`` (easy to read back
without TensorBoard); messages go to the console (through tqdm, so the bar stays intact) and to ``log.txt``.
"""
from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from ..sampling import image_grid

__all__ = ["TrainLogger", "image_grid"]


class TrainLogger:
    """Rank-0 logging for a training run.

    Args:
        run_dir: the run directory (``stats.jsonl``, ``log.txt``, ``tensorboard/``, ``samples/`` go there).
        enabled: ``False`` on ranks other than 0: every method returns at once.
        total_kimg: length of the run, for the progress bar.
        start_kimg: where the bar starts (resumed runs).
        tensorboard: write TensorBoard event files (needs the ``tensorboard`` package; warns once if missing).
        progress: show the tqdm bar (``None``: only on a terminal).
        unit: what the bar counts (``'kimg'``; the encoder trainer passes ``'steps'`` and step counts as "kimg").
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, total_kimg: float | None = None,
                 start_kimg: float = 0.0, tensorboard: bool = True, progress: bool | None = None,
                 desc: str = "train", unit: str = "kimg"):
        self.run_dir = Path(run_dir)
        self.enabled = bool(enabled)
        self._writer = None
        self._bar = None
        self._stats = None
        self._log = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._stats = open(self.run_dir / "stats.jsonl", "a", encoding="utf-8")
        self._log = open(self.run_dir / "log.txt", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except Exception as e:  # tensorboard missing or broken: keep training
                warnings.warn(f"TensorBoard logging disabled ({type(e).__name__}: {e}); stats.jsonl is still written")
        if progress is not False:
            from tqdm.auto import tqdm

            disable = None if progress is None else False  # None: tqdm decides (no bar when not a terminal)
            fmt = ".3f" if unit == "kimg" else ".0f"
            self._bar = tqdm(total=total_kimg, initial=start_kimg, unit=unit, desc=desc, dynamic_ncols=True,
                             disable=disable, file=sys.stderr,
                             bar_format="{l_bar}{bar}| {n:%s}/{total:%s} %s [{elapsed}<{remaining}{postfix}]"
                                        % (fmt, fmt, unit))
        self._bar_kimg = start_kimg

    # ------------------------------------------------------------------ console
    def info(self, message: str) -> None:
        """Print ``message`` (without breaking the bar) and append it to ``log.txt``."""
        if not self.enabled:
            return
        if self._bar is not None and not self._bar.disable:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in message.splitlines() or [""]:
            self._log.write(f"{stamp} {line}\n")
        self._log.flush()

    def progress(self, kimg: float, postfix: Mapping[str, Any] | None = None) -> None:
        """Move the bar to ``kimg`` and show ``postfix`` (short values)."""
        if not self.enabled or self._bar is None:
            return
        delta = kimg - self._bar_kimg
        if delta > 0:
            self._bar.update(delta)
            self._bar_kimg = kimg
        if postfix:
            self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                  refresh=False)

    # ------------------------------------------------------------------ scalars and images
    def scalars(self, values: Mapping[str, float], nimg: int, extra: Mapping[str, Any] | None = None) -> None:
        """Log ``values`` at ``nimg`` images: TensorBoard scalars and one ``stats.jsonl`` line (with ``extra``)."""
        if not self.enabled:
            return
        record = {"nimg": int(nimg), "kimg": nimg / 1000.0, "time": time.time()}
        if extra:
            record.update(extra)
        for k, v in values.items():
            v = float(v)
            record[k] = v if math.isfinite(v) else str(v)
            if self._writer is not None:
                self._writer.add_scalar(k, v, global_step=int(nimg))
        self._stats.write(json.dumps(record) + "\n")
        self._stats.flush()
        if self._writer is not None:
            self._writer.flush()

    def images(self, tag: str, images: torch.Tensor, nimg: int, nrow: int = 8, filename: str | None = None) -> None:
        """Log a grid of ``images`` ``[N, 3, H, W]`` in [-1, 1] to TensorBoard and, with ``filename``, as a PNG
        under ``samples/`` (written atomically)."""
        if not self.enabled:
            return
        grid = image_grid(images.detach().float().cpu(), nrow=nrow, padding=0, pad_value=-1.0,
                          border=False).clamp(-1, 1)
        if self._writer is not None:
            self._writer.add_image(tag, (grid + 1) / 2, global_step=int(nimg))
            self._writer.flush()
        if filename is not None:
            from ..data.images import save_image

            save_image(grid, self.run_dir / "samples" / filename)

    def close(self) -> None:
        """Flush and close everything (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for name in ("_stats", "_log"):
            f = getattr(self, name)
            if f is not None:
                f.close()
                setattr(self, name, None)

    def __enter__(self) -> "TrainLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
