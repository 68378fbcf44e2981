"""What ``clcae app`` computes, without the web: photo sessions over the real-photo pipeline.

A :class:`PhotoEditor` holds the models (loaded once, on first use) and any number of :class:`Session` s, one per
photo a user opened. Opening a photo runs :func:`clcae.photo.process_photo` (align the largest face,
invert it, paste the reconstruction back) into the session's own folder; each slider move then renders the
combination of InterFaceGAN directions with :func:`~clcae.editing.specs.render_edit` for every representation
(w, W+, W+F) and pastes the chosen one back into the photo (:meth:`~clcae.align.paste.PasteTarget.paste`).

Safety, as the app needs it:

- an upload is bytes; it is written to a fixed name (``upload``) in a folder created for the session, so a file
  name sent by a browser never reaches the file system;
- uploads over ``max_upload_bytes`` and files that are not images (:func:`clcae.data.images.load_image` decides,
  with ``max_pixels`` checked from the header before decoding) are refused with :class:`UploadError`; a session
  keeps the photo it had;
- sessions are named by 128 random bits; their files are served only from a list each session keeps of what it
  wrote (:meth:`PhotoEditor.file`); at most ``max_sessions`` are kept (the least recently used is deleted);
- every computation holds one lock, so two users are served one after the other, never mixed.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..align.detect import FaceDetector
from ..align.paste import PasteTarget, load_paste_target
from ..data.images import ImageReadError, load_image, save_image
from ..editing.specs import edit_function, parse_edit, render_edit
from ..inversion.runner import LoadedMethod, load_method
from ..jobs import JobError
from ..photo import NoFaceError, PipelineError, PhotoResult, process_photo

__all__ = ["ModelChoice", "UploadError", "UploadTooLarge", "SessionError", "Session", "PhotoEditor", "KIND_TITLES",
           "USER_ERRORS"]

#: Titles of the representations, in the order the page shows them.
KIND_TITLES = {"w": "w", "wplus": "W+", "wplus_f": "W+F"}
#: Name of the upload inside a session folder (never the browser's file name).
UPLOAD_NAME = "upload"


class UploadError(Exception):
    """An upload the app refuses (too large, not an image, too many pixels); the message is shown to the user."""


class UploadTooLarge(UploadError):
    """An upload over the size limit."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"the file is {size / 2 ** 20:.1f} MiB; the limit is {limit / 2 ** 20:g} MiB")
        self.size, self.limit = size, limit


class SessionError(Exception):
    """An unknown or expired session, or a request the session cannot serve yet (e.g. an edit before a photo)."""


#: Errors whose message is shown to the user as it is (anything else is an internal error).
USER_ERRORS = (UploadError, SessionError, NoFaceError, PipelineError, JobError)


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """An inverter the user can pick: a name for the menu, the checkpoint, and what loading it needs.

    Attributes:
        name: shown in the menu, e.g. ``'clcae (shipped SynthFaces)'``.
        checkpoint: ours or an official CLCAE / pSp / e4e file.
        generator: a StyleGAN2 file supplying an official CLCAE checkpoint's ``latent_avg``.
        avg_image: the official ``image_avg.png`` for CLCAE.
    """

    name: str
    checkpoint: Path
    generator: Path | None = None
    avg_image: Path | None = None


@dataclasses.dataclass
class _Model:
    loaded: LoadedMethod
    directions: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
    unavailable: dict[str, str]


@dataclasses.dataclass
class Session:
    """One user's photo: its folder, the pipeline's result and what the edits need.

    Attributes:
        id: 22 URL-safe characters (128 random bits).
        folder: private folder; everything the session writes is inside it.
        files: the relative paths the session wrote and may serve.
        model: the name of the model the photo was inverted with (None before a photo).
        result: :class:`~clcae.photo.PhotoResult` of the last inversion (its face 0, the largest, is
            the one edited).
        latents: the codes (``w``, ``wplus``, ``f``) on the CPU.
        target: where the crop goes back into the photo.
        renders: how many edits were rendered (names each edit's folder).
        inversions: how many times the photo was inverted (names each result's folder).
        last_edit: relative paths of the last edit's images (``{kind: path, 'pasted': path}``).
    """

    id: str
    folder: Path
    files: set[str] = dataclasses.field(default_factory=set)
    model: str | None = None
    result: PhotoResult | None = None
    latents: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    target: PasteTarget | None = None
    renders: int = 0
    inversions: int = 0
    last_edit: dict[str, str] = dataclasses.field(default_factory=dict)
    used: float = dataclasses.field(default_factory=time.monotonic)

    def register(self, path: Path) -> str:
        """Record a file this session wrote; returns its path relative to the folder (POSIX)."""
        rel = path.resolve().relative_to(self.folder.resolve()).as_posix()
        self.files.add(rel)
        return rel


class PhotoEditor:
    """Models, directions and sessions of the app (thread-safe).

    Args:
        models: the menu; the first is the default.
        directions: a folder of InterFaceGAN direction files (``NAME.pt``); one slider each.
        device: where the networks run.
        workdir: where session folders go (default: a new temporary folder, removed by :meth:`close`).
        detector: the face detector (default :class:`~clcae.align.detect.FaceDetector`; needs the ``[align]`` extra
            and raises :class:`~clcae.align.detect.AlignExtraMissing` here, at start, without it).
        max_upload_bytes: larger uploads are refused.
        max_pixels: photos with more pixels are refused from their header, before decoding.
        max_sessions: sessions kept; opening one more deletes the least recently used.
        feather: soft edge of the paste-back (a fraction of the crop side).
    """

    def __init__(self, models: list[ModelChoice], directions: Path | None, *, device: str | torch.device = "cpu",
                 workdir: Path | None = None, detector: Any = None, max_upload_bytes: int = 10 * 2 ** 20,
                 max_pixels: int = 40_000_000, max_sessions: int = 16, feather: float = 0.1):
        if not models:
            raise ValueError("models must name at least one inverter")
        if len({m.name for m in models}) != len(models):
            raise ValueError(f"model names must be unique; got {[m.name for m in models]}")
        if max_upload_bytes < 1 or max_pixels < 1 or max_sessions < 1:
            raise ValueError("max_upload_bytes, max_pixels and max_sessions must be >= 1")
        self.models = {m.name: m for m in models}
        self.directions = directions
        self.device = torch.device(device)
        self.detector = FaceDetector() if detector is None else detector
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self.max_sessions = int(max_sessions)
        self.feather = float(feather)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="clcae-app-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._loaded: dict[str, _Model] = {}
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()
        self._compute = threading.Lock()  # one computation at a time: torch work, and the files it writes

    # ------------------------------------------------------------------------------------------- models
    def direction_names(self) -> list[str]:
        """The slider names: the ``*.pt`` files of the directions folder, sorted."""
        if self.directions is None or not self.directions.is_dir():
            return []
        return sorted(p.stem for p in self.directions.glob("*.pt") if p.is_file())

    def _model(self, name: str) -> _Model:
        """The loaded model ``name`` with its directions (loaded on first use; call with the compute lock)."""
        if name not in self.models:
            raise SessionError(f"unknown model {name!r}; one of: {', '.join(self.models)}")
        if name not in self._loaded:
            choice = self.models[name]
            loaded = load_method(choice.checkpoint, generator=choice.generator, device=self.device,
                                 avg_image=choice.avg_image)
            generator = loaded.inverter.decoder
            directions, unavailable = {}, {}
            for attr in self.direction_names():
                path = self.directions / f"{attr}.pt"
                try:
                    directions[attr] = edit_function(parse_edit(f"interfacegan:{path}:1"), generator)
                except Exception as e:  # noqa: BLE001 - a direction that does not fit this generator: no slider
                    unavailable[attr] = str(e).splitlines()[0] if str(e) else type(e).__name__
            self._loaded[name] = _Model(loaded, directions, unavailable)
        return self._loaded[name]

    # ------------------------------------------------------------------------------------------- sessions
    def new_session(self) -> Session:
        """A new empty session (the least recently used one is deleted beyond ``max_sessions``)."""
        sid = secrets.token_urlsafe(16)
        folder = self.workdir / sid
        folder.mkdir(mode=0o700)
        session = Session(id=sid, folder=folder)
        with self._sessions_lock:
            self._sessions[sid] = session
            while len(self._sessions) > self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda s: s.used)
                del self._sessions[oldest.id]
                shutil.rmtree(oldest.folder, ignore_errors=True)
        return session

    def session(self, sid: str) -> Session:
        """The session ``sid``; :class:`SessionError` when it does not exist (or was deleted)."""
        with self._sessions_lock:
            session = self._sessions.get(sid)
        if session is None:
            raise SessionError("this photo's session has expired or never existed: open the photo again")
        session.used = time.monotonic()
        return session

    def open_photo(self, session: Session, data: bytes, model: str | None = None) -> dict[str, Any]:
        """Store the uploaded bytes as the session's photo and process it (:meth:`invert`).

        Raises :class:`UploadError` (too large, not an image, too many pixels), :class:`NoFaceError`,
        :class:`SessionError`; the session keeps its previous photo after any of them.
        """
        if len(data) > self.max_upload_bytes:
            raise UploadTooLarge(len(data), self.max_upload_bytes)
        if not data:
            raise UploadError("the file is empty")
        candidate = session.folder / f".{UPLOAD_NAME}.new"
        candidate.write_bytes(data)
        try:
            image = load_image(candidate, max_pixels=self.max_pixels)
        except ImageReadError as e:
            candidate.unlink(missing_ok=True)
            raise UploadError(f"not a usable image: {e.reason}") from None
        del image
        os.replace(candidate, session.folder / UPLOAD_NAME)
        return self.invert(session, model)

    def invert(self, session: Session, model: str | None = None) -> dict[str, Any]:
        """Align, invert and paste back the session's photo with ``model`` (default: the first); returns
        :meth:`state`. Raises :class:`NoFaceError` when the photo has no face."""
        photo = session.folder / UPLOAD_NAME
        if not photo.is_file():
            raise SessionError("open a photo first")
        name = model if model is not None else next(iter(self.models))
        with self._compute:
            entry = self._model(name)
            session.inversions += 1
            out = session.folder / f"result{session.inversions:03d}"  # the previous result stays until this works
            try:
                result = process_photo(photo, out, entry.loaded, (), detector=self.detector, feather=self.feather)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
            face = result.faces[0]  # the largest
            saved = torch.load(face.latents, map_location="cpu", weights_only=True)
            previous = session.result
            session.latents = {k: saved[k] for k in ("w", "wplus", "f") if k in saved}
            session.target = load_paste_target(face.record)
            session.result, session.model, session.last_edit = result, name, {}
            session.files = {f for f in session.files if not f.startswith(("result", "edits/"))}
            if previous is not None:
                shutil.rmtree(previous.out, ignore_errors=True)
            for path in (result.detected, face.aligned, result.pasted_reconstruction, face.latents,
                         *face.reconstructions.values()):
                session.register(path)
        return self.state(session)

    def discard(self, session: Session) -> None:
        """Close a session now and delete its folder (e.g. one whose photo could not be opened)."""
        with self._sessions_lock:
            self._sessions.pop(session.id, None)
        shutil.rmtree(session.folder, ignore_errors=True)

    def edit(self, session: Session, strengths: Mapping[str, float]) -> dict[str, Any]:
        """Render the session's inversion moved by ``strengths`` (``{direction: strength}``, summed) for every
        representation, and paste the default one back; returns ``{'images': {kind: path, 'pasted': path},
        'strengths': {...}}`` with paths relative to the session folder."""
        if session.result is None or session.model is None:
            raise SessionError("open a photo first")
        with self._compute:
            entry = self._model(session.model)
            unknown = sorted(set(strengths) - set(entry.directions))
            if unknown:
                raise SessionError(f"no direction {', '.join(unknown)} for this model; sliders: "
                                   f"{', '.join(entry.directions) or 'none'}")
            active = [(entry.directions[k], float(v)) for k, v in sorted(strengths.items()) if float(v) != 0.0]
            if any(not torch.isfinite(torch.tensor(v)) for _, v in active):
                raise SessionError("strengths must be finite numbers")

            def combined(codes: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
                for fn, value in active:
                    codes = fn(codes, s * value)
                return codes

            result = session.result
            inverter = entry.loaded.inverter
            kinds = list(result.faces[0].reconstructions)
            rendered = render_edit(inverter.decoder, session.latents, combined, [1.0], kinds=kinds,
                                   idx_k=int(getattr(inverter, "idx_k", 5)),
                                   feature_scale=float(getattr(inverter, "feature_scale", 1.0)), batch=1)
            session.renders += 1
            folder = session.folder / "edits" / f"{session.renders:06d}"
            images = {kind: session.register(save_image(rendered[(kind, 1.0)], folder / f"{kind}.png"))
                      for kind in kinds}
            pasted = session.target.paste(rendered[(result.paste_kind, 1.0)], feather=self.feather)
            images["pasted"] = session.register(save_image(pasted, folder / "pasted.png"))
            self._forget_old_edits(session, keep=2)
            session.last_edit = images
        return {"images": images, "strengths": {k: float(v) for k, v in strengths.items()}}

    def _forget_old_edits(self, session: Session, keep: int) -> None:
        folders = sorted((session.folder / "edits").iterdir())
        for old in folders[:-keep]:
            prefix = old.relative_to(session.folder).as_posix() + "/"
            session.files = {f for f in session.files if not f.startswith(prefix)}
            shutil.rmtree(old, ignore_errors=True)

    def state(self, session: Session) -> dict[str, Any]:
        """What the page shows after an inversion: the steps' images (paths relative to the session folder), the
        sliders, the model's note, and the download paths."""
        result = session.result
        if result is None:
            raise SessionError("open a photo first")
        entry = self._loaded[session.model]
        face = result.faces[0]
        rel = session.register
        return {"session": session.id, "model": session.model, "method": result.method,
                "note": result.note, "out_of_domain": result.out_of_domain, "faces_note": result.faces_note(),
                "faces_found": result.faces_found, "paste_kind": result.paste_kind,
                "images": {"detected": rel(result.detected), "aligned": rel(face.aligned),
                           **{kind: rel(path) for kind, path in face.reconstructions.items()},
                           "pasted": rel(result.pasted_reconstruction)},
                "kinds": {kind: KIND_TITLES[kind] for kind in face.reconstructions},
                "directions": list(entry.directions), "unavailable": entry.unavailable,
                "latents": rel(face.latents), "seconds": result.seconds}

    def file(self, session: Session, rel: str) -> Path:
        """The file ``rel`` of the session, if the session wrote it; :class:`SessionError` otherwise (so no path
        from a request ever reaches the file system unchecked)."""
        if rel not in session.files:
            raise SessionError("no such file in this session")
        path = session.folder / rel
        if not path.is_file():
            raise SessionError("no such file in this session")
        return path

    def download_image(self, session: Session) -> Path:
        """The photo as the user sees it now: the last edit pasted back, else the pasted reconstruction."""
        if session.result is None:
            raise SessionError("open a photo first")
        pasted = session.last_edit.get("pasted") or session.register(session.result.pasted_reconstruction)
        return self.file(session, pasted)

    def close(self) -> None:
        """Delete every session (and the work folder when the editor made it)."""
        with self._sessions_lock:
            for session in self._sessions.values():
                shutil.rmtree(session.folder, ignore_errors=True)
            self._sessions.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

