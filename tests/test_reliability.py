"""Reliability battery (issue 8): hostile files, bad image folders, crashes, dead processes and bad arguments,
each run through the scripts a user types, on tiny CPU networks.

What the other test files already cover (the reader, the checkpoint loader and generator training on their own)
is not repeated here; docs/RELIABILITY.md maps every case of the issue to the test that tries it. The five
sections follow the issue:

1. checkpoints: hostile pickles through every script that loads a checkpoint; tampered inverter and training
   checkpoints through ``invert.py`` and ``--resume``;
2. inputs: one folder holding every odd and bad image kind, run through each script that reads image folders
   (``invert.py``, ``eval.py``, ``train.py`` and ``train_generator.py`` on a folder, ``align.py``), plus an empty
   folder, a file symlink loop, an all-unreadable folder and an output folder that already holds results;
3. crashes: encoder training (``train.py``) stopped by SIGINT, then SIGKILLed at a random moment, resumes
   bit-identical to an uninterrupted run; a NaN loss stops with its step or rolls back;
4. processes: a rank of a two-process encoder or generator training that dies or hangs must end the job;
5. arguments: invalid values and combinations for every script fail before any work with a message.

Cases that fail today are real bugs, marked ``xfail(strict=True)`` with the observed failure as the reason, so
fixing one turns its test into an unexpected pass that asks for the mark to be removed.

Runs in about two minutes on one thread; the subprocess tests are marked slow (they still run in CI).
"""
from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import importlib.util
import io
import json
import logging
import os
import pickle
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import clcae.data.images as images_module
from clcae.checkpoints import load_file, save_generator, save_inverter
from clcae.networks.inverters import build_inverter
from clcae.networks.domain import DomainNet, save_domain_net
from clcae.networks.stylegan2 import Generator
from clcae.training.encoder_loop import NonFiniteLossError, run_encoder_training

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"

#: Encoder training on a 32 px generator with a tiny IR-SE-18 trunk (as tests/test_train_encoders.py).
ENCODER = dict(input_size="32", num_layers=18, widths="8,8,16,24", nhead=2, dim_feedforward=32, projection_dim=16,
               idx_k=3, val_n=4, synth_n=64, perceptual="none", identity="none", threads=1, log_interval=1,
               image_interval=1000, sample_n=2, optimizer="adam", lr=1e-3, batch=2)
#: Generator training at 16 px with ~20 k parameters per network (as tests/test_train_generator.py).
GAN = dict(size=16, style_dim=32, n_mlp=2, channel_base=256, channel_max=16, batch=4, workers=0, threads=1,
           r1_interval=2, pl_interval=3, sample_n=4, log_kimg=0.008, sample_kimg=1.0, checkpoint_kimg=0.008,
           snapshot_kimg=1.0, synth_n=64)
INVERTER_GEN = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
INVERTER_TRUNK = dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32)


# ---------------------------------------------------------------------------------------------------- helpers
_SCRIPT_CACHE: dict[str, Any] = {}


def script(name: str) -> Any:
    """The module of ``scripts/<name>.py`` (loaded once, registered in ``sys.modules`` for its dataclasses;
    ``sys.path`` is restored afterwards, as ``demo.py`` inserts the scripts folder)."""
    if name not in _SCRIPT_CACHE:
        spec = importlib.util.spec_from_file_location(f"reliability_{name}", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        saved = list(sys.path)
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path[:] = saved
        _SCRIPT_CACHE[name] = module
    return _SCRIPT_CACHE[name]


@dataclasses.dataclass
class Run:
    """What one in-process script run gave: exit status, what it printed, how long it took."""

    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        """stdout and stderr together."""
        return self.out + self.err


def run_main(name: str, argv: list[Any], patch: Callable[[Any], None] | None = None) -> Run:
    """Run ``scripts/<name>.py``'s ``main(argv)`` in-process (arguments converted with ``str``).

    argparse's ``SystemExit`` becomes its code; any other exception propagates (a traceback is a failure).
    ``patch`` is called with the module first (e.g. to swap the face detector of ``align.py``).
    """
    module = script(name)
    if patch is not None:
        patch(module)
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = module.main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
    return Run(rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0)


def cli_flags(options: dict[str, Any]) -> list[str]:
    """``{'val_n': 4, 'flip': False}`` -> ``['--val-n', '4', '--no-flip']``."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """``{relative path: (bytes, inode)}`` of every file under ``folder``: equal snapshots mean nothing was
    rewritten (an atomic rewrite changes the inode even when the bytes are the same)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_ino)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def subprocess_env() -> dict[str, str]:
    """The environment of child Python processes: one thread, unbuffered, the package importable."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def stats_steps(run_dir: Path) -> list[int]:
    """The steps logged so far in ``run_dir/stats.jsonl`` (lines cut by a kill are ignored)."""
    path = run_dir / "stats.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if "Loss/loss" in record:
                steps.append(int(record["step"]))
    return steps


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 180.0) -> None:
    """Poll ``condition`` until true; fail (killing ``proc``) if the process ends first or after ``timeout``."""
    t0 = time.time()
    while not condition():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process ended (status {proc.returncode}) before {what}:\n{out}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Tiny networks saved to files: a 32 px generator, a pSp inverter into it, a SynthFaces domain network."""
    d = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    G = Generator(**INVERTER_GEN)
    G.latent_avg.copy_(G.mean_latent(256))
    save_generator(G, d / "generator.pt")
    torch.manual_seed(1)
    inv = build_inverter(dict(arch="psp", encoder=INVERTER_TRUNK, generator=INVERTER_GEN,
                              input_size=[32, 32])).eval()
    inv.latent_avg.copy_(G.latent_avg.expand_as(inv.latent_avg))
    save_inverter(inv, d / "psp.pt")
    torch.manual_seed(2)
    save_domain_net(DomainNet(input_size=16, stem_channels=4, channels=(8, 8), blocks=(1, 1), embed_dim=8,
                              attr_reduce=4, attr_hidden=8), d / "domain.pt")
    return {"generator": d / "generator.pt", "psp": d / "psp.pt", "domain": d / "domain.pt", "dir": d}


# ---------------------------------------------------------------------------------------------------- battery
#: Files every script must use, and what each one exercises. The non-UTF-8 name is added by
#: ``build_battery(non_utf8=True)`` (``eval.py`` crashes on it: see its own test).
GOOD = {
    "rgb.png": "RGB, non-square (52x40)",
    "sub/wide.png": "very wide (64x24), in a sub-folder",
    "gray.png": "grayscale (L)",
    "palette.png": "palette (P) with a transparent index",
    "rgba.png": "RGBA, half transparent",
    "cmyk.jpg": "CMYK JPEG",
    "deep16.png": "16-bit grayscale (I;16)",
    "exif_rot.jpg": "EXIF orientation 6 (stored 48x24, shown 24x48)",
    "png_named.jpg": "PNG bytes named .jpg (wrong extension)",
    "jpeg_named.png": "JPEG bytes named .png (wrong extension)",
    "noext": "PNG without an extension",
}
GOOD_NON_UTF8 = b"caf\xff.png"
#: Files every script must refuse, with the words its message must contain.
BAD = {
    "trunc.png": "truncated",
    "trunc.jpg": "truncated",
    "zero.png": "empty file",
    "text.png": "not an image",
    "bomb.png": "above the pixel limit",
    "tiny.png": "too small: 8x8",
    "locked.png": "permission denied",
    "dangling.png": "broken symbolic link",
}
BAD_NON_UTF8 = (b"bad\xfe.png", "not an image")
#: Present but not images: never listed, never reported.
IGNORED = ("notes.txt", "sub/loop (a folder symlink back to the root: a symlink loop)")


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _encoded(arr: np.ndarray, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def display_name(name: str | bytes) -> str:
    """A battery file name as the scripts print it (undecodable bytes as ``\\xNN``)."""
    return name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name


def build_battery(root: Path, non_utf8: bool = True) -> Path:
    """Write the :data:`GOOD`, :data:`BAD` and :data:`IGNORED` files into ``root`` (created); returns ``root``.

    ``locked.png`` is made unreadable with ``chmod 0``; root ignores that, so tests also use
    :func:`refuse_locked`. ``non_utf8`` adds a good and a bad file whose names are not valid UTF-8.
    """
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_noise(40, 52, 1)).save(root / "rgb.png")
    Image.fromarray(_noise(24, 64, 2)).save(root / "sub" / "wide.png")
    Image.fromarray(_noise(30, 30, 3)[..., 0], "L").save(root / "gray.png")
    Image.fromarray(_noise(32, 32, 4)).quantize(16).save(root / "palette.png", transparency=0)
    rgba = np.dstack([_noise(36, 28, 5), np.full((36, 28), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    Image.fromarray(_noise(32, 40, 6)).convert("CMYK").save(root / "cmyk.jpg", quality=90)
    deep = np.random.default_rng(7).integers(0, 65536, (32, 32)).astype(np.uint16)
    Image.fromarray(deep).save(root / "deep16.png")
    with Image.open(root / "deep16.png") as im:
        assert im.mode.startswith("I;16"), im.mode
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_noise(24, 48, 8)).save(root / "exif_rot.jpg", exif=exif.tobytes(), quality=90)
    (root / "png_named.jpg").write_bytes(_encoded(_noise(32, 32, 9), "PNG"))
    (root / "jpeg_named.png").write_bytes(_encoded(_noise(32, 32, 10), "JPEG", quality=90))
    (root / "noext").write_bytes(_encoded(_noise(32, 32, 11), "PNG"))
    png, jpg = _encoded(_noise(64, 64, 12), "PNG"), _encoded(_noise(64, 64, 13), "JPEG")
    (root / "trunc.png").write_bytes(png[: len(png) // 2])
    (root / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("this is text, not an image")
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)  # a 20000x20000 header and no pixels
    (root / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                                    + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    Image.fromarray(_noise(8, 8, 14)).save(root / "tiny.png")
    Image.fromarray(_noise(32, 32, 15)).save(root / "locked.png")
    (root / "locked.png").chmod(0)
    (root / "dangling.png").symlink_to(root / "missing.png")
    (root / "sub" / "loop").symlink_to("..", target_is_directory=True)
    (root / "notes.txt").write_text("not an image: neither listed nor reported")
    if non_utf8:
        raw = os.fsencode(root)
        Image.fromarray(_noise(32, 32, 16)).save(os.path.join(raw, GOOD_NON_UTF8))
        with open(os.path.join(raw, BAD_NON_UTF8[0]), "wb") as fh:
            fh.write(b"garbage with an image extension")
    return root


def good_names(non_utf8: bool) -> set[str]:
    """Printable names (relative paths) of the good files of a battery."""
    return set(GOOD) | ({display_name(GOOD_NON_UTF8)} if non_utf8 else set())


def output_name(name: str) -> str:
    """The output name the per-image scripts give a battery file: its relative path without the extension, but
    the two ``trunc`` files, whose stems collide, keep theirs (:func:`clcae.inversion.runner.list_inputs`)."""
    if name.startswith("trunc."):
        return name
    return name.rsplit(".", 1)[0] if "." in Path(name).name else name


def bad_reasons(non_utf8: bool) -> dict[str, str]:
    """``{printable name: expected words}`` of the bad files of a battery."""
    out = dict(BAD)
    if non_utf8:
        out[display_name(BAD_NON_UTF8[0])] = BAD_NON_UTF8[1]
    return out


@contextlib.contextmanager
def refuse_locked() -> Iterator[None]:
    """Make the image reader's ``open`` refuse ``locked.png`` as the OS refuses a ``chmod 0`` file to a normal
    user (tests often run as root, who can read anything)."""
    def guarded_open(file, *args, **kwargs):
        if os.path.basename(os.fsdecode(file)) == "locked.png":
            raise PermissionError(errno.EACCES, "Permission denied", file)
        return builtins.open(file, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images_module, "open", guarded_open, raising=False)
        yield


class _Records(logging.Handler):
    """Collects the records of one logger (module-scoped fixtures cannot use ``caplog``)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def image_warnings() -> Iterator[list[str]]:
    """The warning messages of :mod:`clcae.data.images` emitted inside the block (filled on exit)."""
    handler = _Records()
    log = logging.getLogger("clcae.data.images")
    log.addHandler(handler)
    messages: list[str] = []
    try:
        yield messages
    finally:
        log.removeHandler(handler)
        messages.extend(r.getMessage() for r in handler.records)


def skipped_files(messages: list[str]) -> dict[str, str]:
    """``{file name: reason}`` from the reader's "skipping unreadable image PATH: REASON" warnings."""
    out = {}
    for m in messages:
        hit = re.match(r"skipping unreadable image (.+?): (.+)$", m)
        if hit:
            out[Path(hit.group(1)).name] = hit.group(2)
    return out


def failures_by_name(failures: list[dict], key: str = "path") -> dict[str, str]:
    """``{file name: reason}`` from a summary's failure list."""
    return {Path(f[key]).name: f["reason"] for f in failures}


def assert_bad_reported(reported: dict[str, str], expected: dict[str, str], where: str) -> None:
    """Every bad file reported once with the expected words, and nothing else reported."""
    expected = {Path(k).name: v for k, v in expected.items()}
    assert set(reported) == set(expected), f"{where}: reported {sorted(reported)}, expected {sorted(expected)}"
    for name, words in expected.items():
        assert words in reported[name], f"{where}: {name}: {reported[name]!r} lacks {words!r}"


# ---------------------------------------------------------------------------------------------------- fake face
class FakeDetector:
    """Stands in for dlib in ``align.py``: one frontal face centred in every photo (synthetic landmarks), so the
    file handling of the script is tested without the optional [align] extra."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    def settings(self) -> dict:
        return {"fake": True}

    def detect(self, arr: np.ndarray) -> list:
        from clcae.align.detect import DetectedFace

        h, w = arr.shape[:2]
        cx, cy, eye = w / 2, h / 2.5, w / 4
        pts = np.zeros((68, 2))
        pts[36:42] = [cx - eye / 2, cy]
        pts[42:48] = [cx + eye / 2, cy]
        pts[48] = [cx - eye / 3, cy + eye]
        pts[54] = [cx + eye / 3, cy + eye]
        return [DetectedFace(box=(0, 0, w - 1, h - 1), score=1.0, landmarks=pts)]


def fake_detector(module: Any) -> None:
    """``run_main`` patch for ``align.py``."""
    module.FaceDetector = FakeDetector


# ================================================================================ 2. inputs: invert.py
@pytest.fixture(scope="module")
def invert_battery(tmp_path_factory, assets) -> dict:
    """One ``invert.py`` run over the battery (non-UTF-8 names included) and a second, identical run."""
    d = tmp_path_factory.mktemp("invert_battery")
    data = build_battery(d / "photos")
    out = d / "out"
    argv = ["--checkpoint", assets["psp"], "--input", data, "--out", out, "--device", "cpu", "--no-progress"]
    with refuse_locked():
        first = run_main("invert", argv)
        summary = json.loads((out / "summary.json").read_text())
        before = snapshot(out)
        second = run_main("invert", argv)
    return dict(data=data, out=out, argv=argv, first=first, summary=summary, before=before, second=second,
                summary2=json.loads((out / "summary.json").read_text()))


def test_invert_reports_every_bad_file_and_inverts_every_good_one(invert_battery):
    run, summary = invert_battery["first"], invert_battery["summary"]
    assert run.rc == 0, run.text
    good, bad = good_names(True), bad_reasons(True)
    assert (summary["done"], summary["failed"], summary["total"]) == (len(good), len(bad), len(good) + len(bad))
    assert_bad_reported(failures_by_name(summary["failures"]), bad, "summary.json")
    for name, words in bad.items():  # one printed line per bad file
        assert any(Path(name).name in line and words in line for line in run.text.splitlines()), (name, run.text)
    latents = invert_battery["out"] / "latents"
    written = {display_name(os.fsencode(p.relative_to(latents).as_posix()))[:-3] for p in latents.rglob("*.pt")}
    assert written == {output_name(n) for n in good}
    for path in latents.rglob("*.pt"):
        assert torch.isfinite(torch.load(path, weights_only=True)["wplus"]).all(), path
    assert "Traceback" not in run.text


def test_invert_applies_exif_orientation(invert_battery, assets, tmp_path):
    """The EXIF-rotated file inverts to the codes of its pixels rotated by hand and saved as PNG (up to the float
    rounding of another batch size), not to those of its stored, unrotated pixels."""
    ref = tmp_path / "ref"
    ref.mkdir()
    with Image.open(invert_battery["data"] / "exif_rot.jpg") as im:
        stored = im.convert("RGB")
        upright = ImageOps.exif_transpose(im).convert("RGB")
    assert (stored.size, upright.size) == ((48, 24), (24, 48))
    upright.save(ref / "upright.png")
    stored.save(ref / "stored.png")
    run = run_main("invert", ["--checkpoint", assets["psp"], "--input", ref, "--out", tmp_path / "o", "--device",
                              "cpu", "--no-progress"])
    assert run.rc == 0, run.text
    codes = {name: torch.load(folder / "latents" / f"{name}.pt", weights_only=True)["wplus"]
             for folder, name in ((invert_battery["out"], "exif_rot"), (tmp_path / "o", "upright"),
                                  (tmp_path / "o", "stored"))}
    torch.testing.assert_close(codes["exif_rot"], codes["upright"], rtol=1e-5, atol=1e-5)
    assert (codes["exif_rot"] - codes["stored"]).abs().max() > 1e-2


def test_invert_rerun_keeps_finished_outputs(invert_battery):
    run, s = invert_battery["second"], invert_battery["summary2"]
    assert run.rc == 0, run.text
    assert (s["done"], s["skipped"], s["failed"]) == (0, len(good_names(True)), len(bad_reasons(True)))
    after = snapshot(invert_battery["out"])
    for key, value in invert_battery["before"].items():
        if key not in ("summary.json", "run.json"):
            assert after[key] == value, f"{key} was rewritten"
    # other settings into the same folder are refused, and nothing is touched
    run = run_main("invert", invert_battery["argv"] + ["--size", "full"])
    assert run.rc == 2 and "other settings" in run.err and "--overwrite" in run.err
    assert snapshot(invert_battery["out"]) == after


def test_invert_empty_folder(tmp_path, assets):
    (tmp_path / "empty").mkdir()
    run = run_main("invert", ["--checkpoint", assets["psp"], "--input", tmp_path / "empty", "--out", tmp_path / "o",
                              "--device", "cpu", "--no-progress"])
    assert run.rc == 2 and "empty" in run.err and "no image files" in run.err
    assert not (tmp_path / "o").exists()


# ================================================================================ 2. inputs: eval.py
@pytest.fixture(scope="module")
def eval_battery(tmp_path_factory, assets) -> dict:
    """``eval.py`` over the battery without non-UTF-8 names (see :func:`test_eval_non_utf8_file_names`), then the
    same command into the same --out."""
    d = tmp_path_factory.mktemp("eval_battery")
    data = build_battery(d / "photos", non_utf8=False)
    out = d / "out"
    argv = ["--method", f"psp={assets['psp']}", "--data", data, "--out", out, "--device", "cpu", "--no-progress",
            "--no-hub-cache"]
    with refuse_locked():
        first = run_main("eval", argv)
        before = snapshot(out)
        second = run_main("eval", argv)
    return dict(first=first, second=second, out=out, before=before)


def test_eval_reports_every_bad_file_and_measures_every_good_one(eval_battery):
    run = eval_battery["first"]
    assert run.rc == 0, run.text
    results = json.loads((eval_battery["out"] / "results.json").read_text())
    data = results["data"]
    good, bad = good_names(False), bad_reasons(False)
    assert (data["files_found"], data["n_measured"]) == (len(good) + len(bad), len(good))
    reported = {f["image"]: f["reason"] for f in data["failures"]}
    assert_bad_reported(reported, {output_name(k): v for k, v in bad.items()}, "results.json")
    assert f"{len(bad)} image(s) could not be read and were skipped" in results["summary"]
    rows = (eval_battery["out"] / "per_image.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {output_name(n) for n in good}


def test_eval_refuses_to_overwrite_results(eval_battery):
    run = eval_battery["second"]
    assert run.rc == 2 and "already holds results" in run.err and "--overwrite" in run.err
    assert snapshot(eval_battery["out"]) == eval_battery["before"]


def test_eval_empty_folder(tmp_path, assets):
    (tmp_path / "empty").mkdir()
    run = run_main("eval", ["--method", f"psp={assets['psp']}", "--data", tmp_path / "empty", "--out", tmp_path / "o",
                            "--device", "cpu", "--no-progress", "--no-hub-cache"])
    assert run.rc == 2 and "--data" in run.err and "no image files" in run.err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", [GOOD_NON_UTF8, BAD_NON_UTF8[0]], ids=["good_file", "bad_file"])
def test_eval_non_utf8_file_names(tmp_path, assets, name):
    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(_noise(32, 32, 0)).save(data / "ok.png")
    raw = os.path.join(os.fsencode(data), name)
    if name == GOOD_NON_UTF8:
        Image.fromarray(_noise(32, 32, 1)).save(raw)
    else:
        with open(raw, "wb") as fh:
            fh.write(b"garbage")
    run = run_main("eval", ["--method", f"psp={assets['psp']}", "--data", data, "--out", tmp_path / "o",
                            "--device", "cpu", "--no-progress", "--no-hub-cache"])
    assert run.rc == 0, run.text
    data_section = json.loads((tmp_path / "o" / "results.json").read_text(encoding="utf-8"))["data"]
    assert data_section["n_measured"] == (2 if name == GOOD_NON_UTF8 else 1)
    (tmp_path / "o" / "per_image.csv").read_text(encoding="utf-8")


# ================================================================================ 2. inputs: align.py
@pytest.fixture(scope="module")
def align_battery(tmp_path_factory) -> dict:
    """``align.py`` (with :class:`FakeDetector`) over the battery, then the same command again."""
    d = tmp_path_factory.mktemp("align_battery")
    data = build_battery(d / "photos")
    out = d / "out"
    argv = ["--input", data, "--out", out, "--size", "32", "--no-progress"]
    with refuse_locked():
        first = run_main("align", argv, fake_detector)
        summary = json.loads((out / "align_summary.json").read_text())
        before = snapshot(out)
        second = run_main("align", argv, fake_detector)
    return dict(first=first, second=second, summary=summary, before=before, out=out,
                summary2=json.loads((out / "align_summary.json").read_text()))


def test_align_reports_every_bad_file_and_crops_every_good_one(align_battery):
    run, s = align_battery["first"], align_battery["summary"]
    assert run.rc == 0, run.text
    good, bad = good_names(True), bad_reasons(True)
    assert (s["aligned"], s["total"], s["no_face"]) == (len(good), len(good) + len(bad), [])
    assert_bad_reported(failures_by_name(s["failed"]), bad, "align_summary.json")
    for name, words in bad.items():
        assert any(line.startswith("unreadable") and Path(name).name in line and words in line
                   for line in run.err.splitlines()), (name, run.err)
    crops = list(align_battery["out"].rglob("*.png"))
    assert len(crops) == len(good)
    for crop in crops:
        with Image.open(crop) as im:
            assert im.size == (32, 32), crop


def test_align_rerun_keeps_finished_crops(align_battery):
    run, s = align_battery["second"], align_battery["summary2"]
    assert run.rc == 0, run.text
    assert (s["aligned"], s["skipped"], len(s["failed"])) == (0, len(good_names(True)), len(bad_reasons(True)))
    after = snapshot(align_battery["out"])
    for key, value in align_battery["before"].items():
        if key not in ("align_summary.json", "align_run.json"):  # the run's record and its settings: rewritten
            assert after[key] == value, f"{key} was rewritten"


def test_align_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    run = run_main("align", ["--input", tmp_path / "empty", "--out", tmp_path / "o", "--no-progress"], fake_detector)
    assert run.rc == 2 and "no image files" in run.err
    assert not (tmp_path / "o").exists()


# ================================================================================ 2. inputs: training on a folder
@pytest.fixture(scope="module")
def encoder_battery(tmp_path_factory, assets) -> dict:
    """``train.py`` (pSp) on the battery: 12 steps of 2 images cover every training file; the validation files are
    read at steps 6 and 12."""
    d = tmp_path_factory.mktemp("encoder_battery")
    data = build_battery(d / "photos")
    out = d / "run"
    argv = ["--generator", assets["generator"], "--method", "psp", "--data", data, "--out", out,
            "--no-tensorboard"] + cli_flags(dict(ENCODER, steps=12, val_interval=6, save_interval=6))
    with refuse_locked(), image_warnings() as messages:
        result = run_main("train", argv)
    return dict(result=result, messages=messages, out=out, argv=argv, script="train")


@pytest.fixture(scope="module")
def gan_battery(tmp_path_factory) -> dict:
    """``train_generator.py`` on the battery: 6 steps of 4 images cover every file."""
    d = tmp_path_factory.mktemp("gan_battery")
    data = build_battery(d / "photos")
    out = d / "run"
    argv = ["--data", data, "--out", out, "--no-tensorboard"] + cli_flags(dict(GAN, kimg=0.024))
    with refuse_locked(), image_warnings() as messages:
        result = run_main("train_generator", argv)
    return dict(result=result, messages=messages, out=out, argv=argv, script="train_generator")


TRAINING_BATTERIES = ["encoder_battery", "gan_battery"]


@pytest.mark.parametrize("battery", TRAINING_BATTERIES)
def test_training_skips_bad_images_with_a_message_and_finishes(battery, request):
    run = request.getfixturevalue(battery)
    assert run["result"].rc == 0, run["result"].text
    assert_bad_reported(skipped_files(run["messages"]), bad_reasons(True), "warnings")
    state = load_file(run["out"] / "checkpoints" / "latest.pt")
    weights = state["task"]["modules"]["encoder"] if "task" in state else state["g"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert "finished:" in run["result"].out


@pytest.mark.parametrize("battery", TRAINING_BATTERIES)
def test_training_refuses_an_out_folder_with_results(battery, request):
    run = request.getfixturevalue(battery)
    before = snapshot(run["out"])
    again = run_main(run["script"], run["argv"])
    assert again.rc == 2 and "already exists and is not empty" in again.err and "--resume" in again.err
    assert snapshot(run["out"]) == before and again.seconds < 20


@pytest.mark.parametrize("battery", TRAINING_BATTERIES)
def test_training_log_counts_the_skipped_images(battery, request):
    run = request.getfixturevalue(battery)
    log = (run["out"] / "log.txt").read_text(errors="replace")
    skipped = skipped_files(run["messages"])
    for name in skipped:
        assert name in log, name
    assert re.search(rf"\b{len(skipped)}\b[^\n]*unreadable", log), log


def _training_argv(name: str, assets: dict, **kw: Any) -> list[Any]:
    """A tiny ``train.py`` (pSp) or ``train_generator.py`` command line, without --data and --out."""
    if name == "train":
        return ["--generator", assets["generator"], "--method", "psp", "--no-tensorboard"] + cli_flags(
            dict(ENCODER, **kw))
    return ["--no-tensorboard"] + cli_flags(dict(GAN, **kw))


@pytest.mark.parametrize("name", ["train", "train_generator"])
def test_training_on_an_empty_folder_names_the_folder(tmp_path, assets, name):
    (tmp_path / "empty").mkdir()
    kw = dict(steps=1) if name == "train" else dict(kimg=0.004)
    run = run_main(name, _training_argv(name, assets, **kw) + ["--data", tmp_path / "empty", "--out",
                                                               tmp_path / "run"])
    assert run.rc == 2 and "empty" in run.err and "no image files found" in run.err and run.seconds < 20


@pytest.mark.parametrize("name", ["train", "train_generator"])
def test_training_on_an_all_unreadable_folder_fails_before_work(tmp_path, assets, name):
    data = tmp_path / "bad"
    data.mkdir()
    for i in range(6):
        (data / f"x{i}.png").write_text("not an image")
    kw = dict(steps=2, val_n=2) if name == "train" else dict(kimg=0.008)
    run = run_main(name, _training_argv(name, assets, **kw) + ["--data", data, "--out", tmp_path / "run"])
    assert run.rc == 2 and str(data) in run.err and "unreadable" in run.err
    assert not (tmp_path / "run").exists()


# ================================================================================ 2. inputs: a file symlink loop
@pytest.mark.parametrize("name", ["invert", "align", "eval", "train", "train_generator"])
def test_file_symlink_loop_is_reported_and_the_run_goes_on(tmp_path, assets, name):
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        Image.fromarray(_noise(32, 32, 20 + i)).save(data / f"ok{i}.png")
    (data / "selfloop.png").symlink_to("selfloop.png")  # stat() fails with ELOOP
    out = tmp_path / "out"
    argv = {
        "invert": ["--checkpoint", assets["psp"], "--input", data, "--device", "cpu", "--no-progress"],
        "align": ["--input", data, "--size", "32", "--no-progress"],
        "eval": ["--method", f"psp={assets['psp']}", "--data", data, "--device", "cpu", "--no-progress",
                 "--no-hub-cache"],
        "train": _training_argv("train", assets, steps=2, val_n=1) + ["--data", data],
        "train_generator": _training_argv("train_generator", assets, kimg=0.008) + ["--data", data],
    }[name] + ["--out", out]
    with image_warnings() as messages:
        run = run_main(name, argv, fake_detector if name == "align" else None)
    assert run.rc == 0, run.text
    if name == "invert":
        reported = failures_by_name(json.loads((out / "summary.json").read_text())["failures"])
    elif name == "align":
        reported = failures_by_name(json.loads((out / "align_summary.json").read_text())["failed"])
    elif name == "eval":
        reported = {f["image"]: f["reason"] for f in json.loads((out / "results.json").read_text())["data"]["failures"]}
        reported = {f"{k}.png": v for k, v in reported.items()}
    else:
        reported = skipped_files(messages)
    assert_bad_reported(reported, {"selfloop.png": "symbolic links"}, name)


# ================================================================================ 1. checkpoints through scripts
class _Payload:
    """Unpickling this runs ``touch MARKER``: no checkpoint loader may get that far."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """A torch file and a raw pickle whose unpickling would create ``marker``, and a run directory whose
    ``checkpoints/latest.pt`` is such a file."""
    d = tmp_path_factory.mktemp("hostile")
    marker = d / "PWNED"
    torch.save({"g_ema": _Payload(marker), "latent_avg": torch.zeros(3)}, d / "evil.pt")
    (d / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Payload(marker)}))
    (d / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"train_format": "clcae.encoder_training", "step": _Payload(marker)},
               d / "run" / "checkpoints" / "latest.pt")
    return {"pt": d / "evil.pt", "pkl": d / "evil.pkl", "run": d / "run", "marker": marker}


#: ``{case: (script, argv template)}``: every way a script loads a checkpoint.
HOSTILE_CASES = {
    "invert --checkpoint": ("invert", ["--checkpoint", "{pt}", "--input", "{photos}", "--out", "{out}",
                                       "--device", "cpu"]),
    "invert --generator (projection)": ("invert", ["--method", "projection", "--generator", "{pkl}", "--perceptual",
                                                   "none", "--input", "{photos}", "--out", "{out}", "--device",
                                                   "cpu"]),
    "eval --method": ("eval", ["--method", "a={pt}", "--data", "{photos}", "--out", "{out}", "--device", "cpu"]),
    "train --generator": ("train", ["--generator", "{pkl}", "--data", "synthfaces", "--method", "psp",
                                    "--input-size", "32", "--out", "{out}"]),
    "train --resume": ("train", ["--resume", "{run}"]),
    "train_generator --resume": ("train_generator", ["--resume", "{pt}"]),
    "train_domain_net --resume": ("train_domain_net", ["--resume", "{pt}"]),
    "train_domain_net --eval-only": ("train_domain_net", ["--eval-only", "{pt}"]),
    "generate --generator": ("generate", ["--generator", "{pkl}", "--out", "{out}", "--device", "cpu"]),
    "generate_pairs --generator": ("generate_pairs", ["--generator", "{pt}", "--out", "{out}", "--device", "cpu"]),
    "convert_checkpoint": ("convert_checkpoint", ["{pkl}", "{out}/g.pt"]),
    "eval_generator --generator": ("eval_generator", ["--generator", "{pt}", "--domain-net", "{domain}"]),
    "ganspace_pca --generator": ("ganspace_pca", ["--generator", "{pt}", "--out", "{out}/p.pt", "--device", "cpu"]),
    "find_directions --domain-net": ("find_directions", ["--generator", "{generator}", "--attribute", "smile",
                                                         "--domain-net", "{pt}", "--out", "{out}/d.pt", "--device",
                                                         "cpu"]),
}


@pytest.mark.parametrize("case", list(HOSTILE_CASES))
def test_hostile_pickles_are_refused_by_every_script(case, hostile, assets, tmp_path):
    name, template = HOSTILE_CASES[case]
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_noise(32, 32, 0)).save(photos / "a.png")
    values = dict(pt=hostile["pt"], pkl=hostile["pkl"], run=hostile["run"], photos=photos, out=tmp_path / "out",
                  domain=assets["domain"], generator=assets["generator"])
    run = run_main(name, [a.format(**values) for a in template])
    assert run.rc == 2, run.text
    assert "refused" in run.err and "system" in run.err and "nothing from the file was run" in run.err, run.err
    assert not hostile["marker"].exists(), "the payload ran"


def _break_inverter(kind: str) -> Callable[[dict], str]:
    """An edit of an inverter file (``{'format_version', 'kwargs', 'state_dict', ...}``) returning what it broke."""
    def edit(raw: dict) -> str:
        key = _first_weight(raw["state_dict"])
        if kind == "nan":
            raw["state_dict"][key].view(-1)[0] = float("nan")
        elif kind == "inf":
            raw["state_dict"][key].view(-1)[-1] = float("inf")
        elif kind == "shape":
            raw["state_dict"][key] = raw["state_dict"][key][:1]
        else:
            raw["format_version"] = 99
            return "format_version 99"
        return key
    return edit


@pytest.mark.parametrize("kind", ["nan", "inf", "shape", "version"])
def test_invert_validates_the_inverter_file_naming_the_key(kind, assets, tmp_path):
    raw = torch.load(assets["psp"], map_location="cpu", weights_only=True)
    what = _break_inverter(kind)(raw)
    torch.save(raw, tmp_path / "broken.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_noise(32, 32, 0)).save(photos / "a.png")
    run = run_main("invert", ["--checkpoint", tmp_path / "broken.pt", "--input", photos, "--out", tmp_path / "out",
                              "--device", "cpu", "--no-progress"])
    assert run.rc == 2 and what in run.err and "broken.pt" in run.err, run.text
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory, assets) -> Path:
    """A finished 2-step pSp run directory (``train.py``)."""
    out = tmp_path_factory.mktemp("encoder_run") / "run"
    run_encoder_training(dict(ENCODER, generator=str(assets["generator"]), method="psp", data="synthfaces",
                              steps=2, val_interval=2, save_interval=2, out=str(out)), tensorboard=False,
                         progress=False)
    return out


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    """A finished 2-step generator training run directory (``train_generator.py``)."""
    from clcae.training.gan import run_training

    out = tmp_path_factory.mktemp("gan_run") / "run"
    run_training(dict(GAN, data="synthfaces", kimg=0.008, out=str(out)), tensorboard=False, progress=False)
    return out


def _tampered(src: Path, dst: Path, edit: Callable[[dict], str]) -> str:
    """Copy the training checkpoint ``src`` to ``dst`` after ``edit`` (which returns the key it broke)."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    key = edit(state)
    torch.save(state, dst)
    return key


def _first_weight(sd: dict) -> str:
    return next(k for k, v in sd.items() if k.endswith("weight") and v.is_floating_point())


def _wrong_shape(state: dict) -> str:
    sd = state["task"]["modules"]["encoder"]
    key = _first_weight(sd)
    sd[key] = torch.zeros(3)
    return key


def test_encoder_resume_checks_shapes_and_version(encoder_run, tmp_path):
    latest = encoder_run / "checkpoints" / "latest.pt"
    key = _tampered(latest, tmp_path / "shape.pt", _wrong_shape)
    run = run_main("train", ["--resume", tmp_path / "shape.pt", "--out", tmp_path / "a", "--steps", "3"])
    assert run.rc == 2 and key in run.err and "shape" in run.err and "(3,)" in run.err, run.err

    def future(state: dict) -> str:
        state["train_format_version"] = 99
        return "train_format_version"

    _tampered(latest, tmp_path / "future.pt", future)
    run = run_main("train", ["--resume", tmp_path / "future.pt", "--out", tmp_path / "b", "--steps", "3"])
    assert run.rc == 2 and "version 99 is not supported" in run.err
    assert not (tmp_path / "b").exists()


def test_encoder_resume_with_mismatched_shapes_creates_nothing(encoder_run, tmp_path):
    _tampered(encoder_run / "checkpoints" / "latest.pt", tmp_path / "shape.pt", _wrong_shape)
    run = run_main("train", ["--resume", tmp_path / "shape.pt", "--out", tmp_path / "a", "--steps", "3"])
    assert run.rc == 2
    assert not (tmp_path / "a").exists()


def test_generator_resume_with_mismatched_shapes_creates_nothing(gan_run, tmp_path):
    """The generator trainer loads a resumed state into its networks before the run directory exists."""
    def wrong_shape(state: dict) -> str:
        key = _first_weight(state["d"])
        state["d"][key] = torch.zeros(3)
        return key

    key = _tampered(gan_run / "checkpoints" / "latest.pt", tmp_path / "shape.pt", wrong_shape)
    run = run_main("train_generator", ["--resume", tmp_path / "shape.pt", "--out", tmp_path / "a",
                                       "--kimg", "0.016", "--no-tensorboard"])
    assert run.rc == 2 and key in run.err and "(3,)" in run.err, run.text
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("name", ["train", "train_generator"])
def test_resume_refuses_nan_weights_naming_the_key(name, encoder_run, gan_run, tmp_path):
    if name == "train":
        src, extra = encoder_run / "checkpoints" / "latest.pt", ["--steps", "4"]

        def poison(state: dict) -> str:
            sd = state["task"]["modules"]["encoder"]
            key = _first_weight(sd)
            sd[key].view(-1)[0] = float("nan")
            return key
    else:
        src, extra = gan_run / "checkpoints" / "latest.pt", ["--kimg", "0.016"]

        def poison(state: dict) -> str:
            key = _first_weight(state["g"])
            state["g"][key].view(-1)[0] = float("nan")
            return key
    key = _tampered(src, tmp_path / "nan.pt", poison)
    run = run_main(name, ["--resume", tmp_path / "nan.pt", "--out", tmp_path / "run", "--no-tensorboard"] + extra)
    assert run.rc == 2 and key in run.err and re.search("non-finite|NaN", run.err), run.text
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()


# ================================================================================ 3. crashes: encoder training
def _encoder_opts(assets: dict, **kw: Any) -> dict:
    return dict(ENCODER, generator=str(assets["generator"]), **kw)


def _training_state(path: Path) -> dict:
    """Everything a training checkpoint holds except the options (they name the run directory)."""
    return {k: v for k, v in load_file(path).items() if k != "args"}


def _assert_identical(a: Any, b: Any, where: str = "state") -> None:
    """Nested states equal bit for bit (tensors with ``torch.equal``)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            _assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_encoder_sigint_then_random_sigkill_then_resume_is_bit_identical(assets, tmp_path):
    """A real ``train.py`` process (e4e: encoder, latent discriminator, progressive stages): Ctrl-C saves and exits
    130; the resumed process is SIGKILLed at a random moment (possibly inside a checkpoint write); resuming again
    ends bit-identical to an uninterrupted run. ``CLCAE_KILL_SEED`` replays a kill moment."""
    seed = int(os.environ.get("CLCAE_KILL_SEED", time.time_ns() % 2 ** 31))
    delay = random.Random(seed).uniform(0.0, 0.6)
    steps = 30
    opts = _encoder_opts(assets, method="e4e", data="synthfaces", steps=steps, save_interval=2, val_interval=10,
                         progressive_start=4, progressive_every=4)
    run_encoder_training(dict(opts, out=str(tmp_path / "full")), tensorboard=False, progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, str(SCRIPTS / "train.py"), "--no-tensorboard"]
    proc = subprocess.Popen(cmd + cli_flags(dict(opts, out=str(out))), env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: len(stats_steps(out)) >= 3, proc, "step 3")
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, log
    assert "SIGINT received" in log and f"--resume {out}" in log and "Traceback" not in log
    stopped = load_file(out / "checkpoints" / "latest.pt")["step"]
    assert 3 <= stopped < steps, log

    proc = subprocess.Popen(cmd + ["--resume", str(out)], env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: max(stats_steps(out), default=0) > stopped, proc, "the resumed run's first step")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_file(out / "checkpoints" / "latest.pt")["step"]  # a whole file, whatever the kill hit
    assert stopped <= killed_at < steps, f"not killed mid-run (seed {seed}); make the run longer"

    resumed = run_encoder_training({}, resume=out, tensorboard=False, progress=False)
    assert resumed.step == steps
    _assert_identical(_training_state(tmp_path / "full" / "checkpoints" / "latest.pt"),
                      _training_state(out / "checkpoints" / "latest.pt"),
                      f"state (CLCAE_KILL_SEED={seed}: killed {delay:.2f} s into the run, at step {killed_at})")


def _poison_losses(monkeypatch, at_step: int, times: int = 1) -> None:
    """Make the training loss of step ``at_step`` (0-based) NaN ``times`` times. The NaN flows through backward
    into the optimiser, so the encoder's weights really become NaN; validation losses are left alone."""
    from clcae.training.inversion import InversionTask

    original = InversionTask._losses
    left = [times]

    def poisoned(self, x, out, step):
        terms = original(self, x, out, step)
        if step == at_step and self.inverter.encoder.training and left[0] > 0:
            left[0] -= 1
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(InversionTask, "_losses", poisoned)


def _finite_encoder(path: Path) -> bool:
    weights = load_file(path)["task"]["modules"]["encoder"]
    return all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())


def test_encoder_nan_loss_stops_with_the_step(assets, tmp_path, monkeypatch):
    _poison_losses(monkeypatch, at_step=3)
    out = tmp_path / "run"
    run = run_main("train", ["--generator", assets["generator"], "--method", "psp", "--data", "synthfaces", "--out",
                             out, "--no-tensorboard"] + cli_flags(dict(ENCODER, steps=6, save_interval=2,
                                                                       val_interval=6)))
    assert run.rc == 1, run.text
    assert "error: training stopped: non-finite loss at step 3" in run.err and f"--resume {out}" in run.err
    assert "non-finite loss at step 3" in (out / "log.txt").read_text()
    assert load_file(out / "checkpoints" / "latest.pt")["step"] == 2  # the NaN step was never saved
    assert _finite_encoder(out / "checkpoints" / "latest.pt")


def test_encoder_nan_loss_rolls_back_and_continues(assets, tmp_path, monkeypatch):
    _poison_losses(monkeypatch, at_step=3)
    out = tmp_path / "run"
    result = run_encoder_training(_encoder_opts(assets, method="psp", data="synthfaces", steps=6, save_interval=2,
                                                val_interval=6, on_nan="rollback", out=str(out)),
                                  tensorboard=False, progress=False)
    assert result.step == 6 and not result.stopped_early
    log = (out / "log.txt").read_text()
    assert "non-finite loss at step 3" in log and "rollback 1/3: reloaded step 2" in log
    assert load_file(out / "checkpoints" / "latest.pt")["step"] == 6
    assert _finite_encoder(out / "checkpoints" / "latest.pt")  # the NaN weights were replaced by step 2's


def test_encoder_nan_loss_that_keeps_coming_back_exhausts_the_rollbacks(assets, tmp_path, monkeypatch):
    _poison_losses(monkeypatch, at_step=3, times=10)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3"):
        run_encoder_training(_encoder_opts(assets, method="psp", data="synthfaces", steps=6, save_interval=2,
                                           val_interval=6, on_nan="rollback", max_rollbacks=2, out=str(out)),
                             tensorboard=False, progress=False)
    log = (out / "log.txt").read_text()
    assert "rollback 2/2" in log and "rollback 3/" not in log
    assert _finite_encoder(out / "checkpoints" / "latest.pt")


# ================================================================================ 4. processes: a dead rank
_RANK_FAULT = r"""
import importlib.util, os, signal, sys, time
from clcae.training.gan import StyleGAN2Trainer
from clcae.training.inversion import InversionTask

mode, script_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
rank = int(os.environ["RANK"])


def fault():
    if mode == "dies":
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does: no message, no clean-up
    time.sleep(10 ** 6)  # stuck (a deadlock, a hung file system)


def patch(cls, step_of):
    original = cls.train_step

    def train_step(self, *args):
        if rank == 1 and step_of(self, *args) == 2:
            fault()
        return original(self, *args)

    cls.train_step = train_step


patch(InversionTask, lambda self, batch, step: step)  # encoder training: the step is an argument
patch(StyleGAN2Trainer, lambda self, real: self.step)  # generator training: steps done so far (0-based)
spec = importlib.util.spec_from_file_location("train_script", script_path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.exit(module.main(argv))
"""
DIST_TIMEOUT_S = 5


def _two_rank_job(job: str, mode: str, assets: dict, out: Path) -> tuple[int, str, float]:
    """Ranks 0 and 1 of a 2-process ``train.py`` (``job='encoder'``, pSp) or ``train_generator.py``
    (``'generator'``), gloo, started by hand as torchrun would start them; rank 1 dies (``mode='dies'``) or hangs
    (``'hangs'``) at its third step. Returns rank 0's ``(exit status, output, seconds)``; rank 1 is killed
    afterwards (torchrun would do that)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if job == "encoder":
        path = SCRIPTS / "train.py"
        argv = ["--generator", str(assets["generator"]), "--method", "psp", "--data", "synthfaces", "--out", str(out),
                "--no-tensorboard", "--dist-timeout", str(DIST_TIMEOUT_S)] + cli_flags(
            dict(ENCODER, batch=4, steps=50, save_interval=100, val_interval=100))
    else:
        path = SCRIPTS / "train_generator.py"
        argv = ["--data", "synthfaces", "--out", str(out), "--no-tensorboard",
                "--dist-timeout", str(DIST_TIMEOUT_S)] + cli_flags(
            dict(GAN, batch=8, kimg=1.0, log_kimg=0.008, checkpoint_kimg=1.0))
    procs = []
    t0 = time.time()
    for rank in range(2):
        env = dict(subprocess_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK_FAULT, mode, str(path)] + argv,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        text, _ = procs[0].communicate(timeout=240)
        return procs[0].returncode, text, time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


@pytest.fixture(scope="module")
def rank_faults(tmp_path_factory, assets) -> dict[tuple[str, str], tuple[int, str, float]]:
    """Rank 0's outcome when rank 1 dies, and when it hangs, in encoder and in generator training."""
    d = tmp_path_factory.mktemp("rank_faults")
    return {(job, mode): _two_rank_job(job, mode, assets, d / f"{job}-{mode}")
            for job in ("encoder", "generator") for mode in ("dies", "hangs")}


#: what rank 0 printed before the fault, showing both ranks trained
_BEFORE_FAULT = {"encoder": "step 2:", "generator": "step 2 kimg"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dies", "hangs"])
@pytest.mark.parametrize("job", ["encoder", "generator"])
def test_a_dead_or_stuck_rank_ends_the_training_job(rank_faults, job, mode):
    rc, text, seconds = rank_faults[job, mode]
    assert _BEFORE_FAULT[job] in text, text
    assert rc == 1, text
    assert seconds < 180, f"rank 0 needed {seconds:.0f} s to give up"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dies", "hangs"])
@pytest.mark.parametrize("job", ["encoder", "generator"])
def test_a_dead_or_stuck_rank_is_reported_in_one_line(rank_faults, job, mode):
    rc, text, _ = rank_faults[job, mode]
    assert "error (rank 0)" in text and "Traceback" not in text, text


# ================================================================================ 5. arguments
#: ``(script, argv template, words the message must contain)``; ``{out}`` must not exist afterwards.
ARGUMENT_CASES = [
    ("train_generator", ["--data", "synthfaces", "--size", "48", "--out", "{out}"], "power of two"),
    ("train_generator", ["--data", "synthfaces", "--size", "16", "--aug", "sometimes", "--out", "{out}"],
     "invalid choice"),
    ("train", ["--generator", "{generator}", "--data", "synthfaces", "--method", "psp", "--input-size", "48x40",
               "--out", "{out}"], "multiples of 16"),
    ("train", ["--generator", "{generator}", "--data", "synthfaces", "--method", "pixel2style", "--out", "{out}"],
     "invalid choice"),
    ("train", ["--generator", "{generator}", "--data", "synthfaces", "--method", "psp", "--stage", "align",
               "--out", "{out}"], "--stage align is CLCAE's stage 1"),
    ("train", ["--resume", "{encoder_run}", "--num-layers", "34", "--out", "{out}"], "cannot change on resume"),
    ("train", ["--config", "synthfaces64", "--resume", "{encoder_run}", "--out", "{out}"],
     "--config and --resume together"),
    pytest.param("train", ["--generator", "{missing}", "--data", "synthfaces", "--method", "psp", "--input-size",
                           "32", "--out", "{out}"], "no such file"),
    pytest.param("train", ["--generator", "{psp}", "--data", "synthfaces", "--method", "psp", "--input-size", "32",
                           "--out", "{out}"], "not a generator"),
    pytest.param("train", ["--generator", "{generator}", "--data", "{missing}", "--method", "psp", "--input-size",
                           "32", "--out", "{out}"], "no such folder"),
    pytest.param("train", ["--generator", "{generator}", "--data", "synthfaces", "--method", "psp", "--input-size",
                           "32", "--lpips-weights", "{missing}", "--out", "{out}"], "--lpips-weights"),
    ("train_domain_net", ["--input-size", "48", "--out", "{out}"], "power of two"),
    ("train_domain_net", ["--batch", "1", "--out", "{out}"], "--batch must be >= 2"),
    ("invert", ["--checkpoint", "{psp}", "--method", "clcae", "--input", "{photos}", "--out", "{out}", "--device",
                "cpu"], "holds a psp inverter"),
    ("invert", ["--checkpoint", "{psp}", "--method", "styleclip", "--input", "{photos}", "--out", "{out}"],
     "invalid choice"),
    ("invert", ["--checkpoint", "{generator}", "--input", "{photos}", "--out", "{out}", "--device", "cpu"],
     "--method projection"),
    ("invert", ["--checkpoint", "{psp}", "--input", "{photos}", "--out", "{out}", "--device", "tpu"],
     "is not a device"),
    ("eval", ["--method", "a={generator}", "--data", "{photos}", "--out", "{out}", "--device", "cpu"],
     "not an inverter"),
    ("eval", ["--method", "{psp}", "--data", "{photos}", "--out", "{out}"], "expected NAME=VALUE"),
    ("eval", ["--method", "a={psp}", "--data", "synthfaces", "--protocol", "celebahq", "--out", "{out}", "--device",
              "cpu"], "--protocol celebahq"),
    ("eval", ["--projection", "p={generator}:z:10", "--data", "{photos}", "--out", "{out}"], "SPACE w or wplus"),
    ("align", ["--input", "{photos}", "--out", "{out}", "--size", "64", "--transform-size", "32"],
     "--transform-size (32) must be >= --size (64)"),
    ("align", ["--input", "{photos}", "--out", "{out}", "--detector", "mtcnn"], "invalid choice"),
    ("align", ["--input", "{missing}", "--out", "{out}"], "no such file or folder"),
    ("edit", ["--generator", "{generator}", "--edit", "bogus:1", "--out", "{out}", "--device", "cpu"],
     "expected interfacegan:"),
    ("edit", ["--latents", "{photos}", "--input", "{photos}", "--edit", "sefa:1:1", "--out", "{out}"], "not both"),
    ("generate_pairs", ["--generator", "{psp}", "--out", "{out}", "--device", "cpu"], "not a generator"),
    ("generate_pairs", ["--generator", "{generator}", "--out", "{out}", "--device", "tpu"], "is not a device"),
    ("generate", ["--generator", "{psp}", "--out", "{out}", "--device", "cpu"], "not a generator"),
    ("generate", ["--generator", "{generator}", "--seeds", "a-b", "--out", "{out}"], "--seeds"),
    pytest.param("generate", ["--generator", "{generator}", "--seeds", "0-1", "--batch", "0", "--out", "{out}",
                              "--device", "cpu"], "--batch"),
    ("convert_checkpoint", ["{psp}", "{out}/g.pt"], "not a generator"),
    ("convert_checkpoint", ["{generator}", "{out}/g.pt", "--to", "nvidia"], "invalid choice"),
    ("make_synthfaces", ["--out", "{out}", "--res", "100", "--n", "2", "--test-n", "0"], "invalid choice"),
    pytest.param("make_synthfaces", ["--n", "2", "--test-n", "0"], "--out is required"),
    pytest.param("make_synthfaces", ["--out", "{out}", "--n", "-3", "--test-n", "0"], "--n"),
    ("eval_generator", ["--generator", "{generator}", "--domain-net", "{psp}", "--n", "4"], "not a domain_net"),
    pytest.param("eval_generator", ["--generator", "{generator}", "--domain-net", "{domain}", "--n", "4",
                                    "--batch", "0"], "--batch"),
    pytest.param("eval_generator", ["--generator", "{generator}", "--domain-net", "{domain}", "--n", "4",
                                    "--device", "tpu"], "is not a device"),
    ("ganspace_pca", ["--generator", "{generator}", "--n", "1", "--out", "{out}/p.pt", "--device", "cpu"],
     "--n must be >= 2"),
    ("find_directions", ["--generator", "{generator}", "--attribute", "nose", "--domain-net", "{domain}", "--n",
                         "8", "--out", "{out}/d.pt", "--device", "cpu", "--no-progress"], "predicts"),
    pytest.param("find_directions", ["--generator", "{generator}", "--attribute", "smile", "--domain-net",
                                     "{domain}", "--n", "8", "--batch", "0", "--out", "{out}/d.pt", "--device",
                                     "cpu", "--no-progress"], "--batch"),
    pytest.param("demo", ["--n", "0", "--out", "{out}", "--device", "cpu"], "--n"),
    pytest.param("demo", ["--out", "{out}", "--device", "tpu"], "is not a device"),
]


def _case_id(case: Any) -> str:
    values = case.values if hasattr(case, "values") else case
    return f"{values[0]}:{' '.join(values[1]).replace('{', '').replace('}', '')[:70]}"


@pytest.mark.parametrize("name,template,words", ARGUMENT_CASES, ids=[_case_id(c) for c in ARGUMENT_CASES])
def test_bad_arguments_fail_before_work_with_a_message(name, template, words, assets, encoder_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_noise(32, 32, 0)).save(photos / "a.png")
    out = tmp_path / "out"
    values = dict(generator=assets["generator"], psp=assets["psp"], domain=assets["domain"], photos=photos, out=out,
                  missing=tmp_path / "missing.pt", encoder_run=encoder_run)
    run = run_main(name, [a.format(**values) for a in template], fake_detector if name == "align" else None)
    assert run.rc == 2, run.text
    assert "error" in run.err and words in run.err, run.text  # on stderr, where errors belong
    assert "Traceback" not in run.text
    assert not out.exists(), f"{out} was created: {sorted(p.name for p in out.iterdir())}"
    assert run.seconds < 20
