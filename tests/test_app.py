"""``clcae app`` over HTTP (clcae/app): the whole path on the bundled astronaut with the shipped SynthFaces models
(open -> align -> invert -> edit -> paste back -> downloads), and the safety properties: loopback binding and Host
check, the upload size limit, non-images, no face, files served only from a session's own list, two users at once
without mixing, and the app still working after each bad request.

Needs the [align] extra (dlib) and the shipped models; skipped cleanly without them. The real-browser test of the
same app is tests/test_app_browser.py."""
from __future__ import annotations

import io
import json
import socket
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

pytest.importorskip("dlib", reason="needs the [align] extra: pip install -e .[align]")

from clcae import console  # noqa: E402
from clcae.align.detect import AlignExtraMissing, FaceDetector  # noqa: E402
from clcae.app import build_parser, default_models  # noqa: E402
from clcae.app.editor import PhotoEditor  # noqa: E402
from clcae.app.server import EXAMPLES, make_server, serve_in_thread  # noqa: E402
from clcae.pretrained import SYNTHFACES_DIRECTIONS, pretrained_dir  # noqa: E402
from test_align import quad_mask  # noqa: E402  (the same quad test, one definition)

pytestmark = pytest.mark.usefixtures("one_thread")

ASTRONAUT = EXAMPLES / "astronaut.jpg"


def _detector():
    try:
        return FaceDetector()
    except AlignExtraMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app on a free loopback port with the shipped models; yields ``(base_url, editor)``."""
    models = default_models()
    if not models:
        pytest.skip("the shipped SynthFaces inverters are not in pretrained/")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    editor = PhotoEditor(models, pretrained_dir() / SYNTHFACES_DIRECTIONS, detector=_detector(),
                         workdir=tmp_path_factory.mktemp("app"), max_upload_bytes=2 * 2 ** 20, max_sessions=4)
    server = make_server(editor, "127.0.0.1", 0)
    serve_in_thread(server)
    yield server.url.rstrip("/"), editor
    server.shutdown()
    server.server_close()
    editor.close()
    torch.set_num_threads(n)


def request(url: str, data: bytes | None = None, *, method: str | None = None, headers: dict | None = None
            ) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def post_json(url: str, payload: dict) -> tuple[int, dict]:
    status, body, _ = request(url, json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    return status, json.loads(body)


def open_photo(base: str, data: bytes, model: str | None = None) -> tuple[int, dict]:
    status, body, _ = request(base + "/api/photo" + (f"?model={urllib.request.quote(model)}" if model else ""), data)
    return status, json.loads(body)


def image(base: str, sid: str, rel: str) -> np.ndarray:
    status, body, headers = request(f"{base}/files/{sid}/{rel}")
    assert status == 200, (rel, body[:200])
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.int16)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def assert_still_works(base: str) -> None:
    status, body, _ = request(base + "/api/config")
    assert status == 200 and json.loads(body)["models"]


def test_defaults_bind_to_loopback():
    args = build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.max_upload_mb == 10


def test_whole_path_on_the_astronaut(app):
    base, editor = app
    status, body, headers = request(base + "/")
    assert status == 200 and b'id="file"' in body and headers["Content-Type"].startswith("text/html")
    status, config = 200, json.loads(request(base + "/api/config")[1])
    assert config["examples"] == ["astronaut"] and set(config["directions"]) == {"age", "glasses", "smile", "yaw"}

    status, state = open_photo(base, ASTRONAUT.read_bytes())
    assert status == 200, state
    sid = state["session"]
    assert state["faces_found"] == 1 and state["out_of_domain"] and "SynthFaces" in state["note"]
    assert set(state["kinds"]) == {"w", "wplus", "wplus_f"} and state["paste_kind"] == "wplus_f"
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"), dtype=np.int16)
    recs = {k: image(base, sid, state["images"][k]) for k in ("w", "wplus", "wplus_f")}
    assert all(r.shape == (64, 64, 3) for r in recs.values())
    assert np.abs(recs["w"] - recs["wplus_f"]).mean() > 1  # the three representations differ
    pasted = image(base, sid, state["images"]["pasted"])
    assert pasted.shape == photo.shape
    quad = editor.session(sid).target.quad
    outside = ~quad_mask(quad, photo.shape[:2], shrink=-0.02)
    inside = quad_mask(quad, photo.shape[:2], shrink=0.3)
    assert np.array_equal(pasted[outside], photo[outside])  # the photo, untouched outside the crop
    assert np.abs(pasted - photo)[inside].mean() > 10  # the drawn SynthFaces face inside it

    status, zero = post_json(base + "/api/edit", {"session": sid, "strengths": {"smile": 0}})
    assert status == 200
    assert np.abs(image(base, sid, zero["images"]["pasted"]) - pasted).max() <= 1  # strength 0: the inversion
    status, edit = post_json(base + "/api/edit", {"session": sid, "strengths": {"smile": 3, "age": -2}})
    assert status == 200
    edited = image(base, sid, edit["images"]["pasted"])
    assert np.abs(edited - pasted)[inside].mean() > 1 and np.array_equal(edited[outside], photo[outside])
    for kind in ("w", "wplus", "wplus_f"):
        assert np.abs(image(base, sid, edit["images"][kind]) - recs[kind]).mean() > 1, kind

    status, body, headers = request(f"{base}/download/{sid}/image")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.int16), edited)
    status, body, headers = request(f"{base}/download/{sid}/latents")
    latents = torch.load(io.BytesIO(body), weights_only=True)
    assert latents["wplus"].shape == (10, 128) and latents["method"] == "clcae" and "f" in latents

    status, other = post_json(base + "/api/invert", {"session": sid, "model": "psp (SynthFaces)"})
    assert status == 200 and other["session"] == sid and other["method"] == "psp"
    assert request(f"{base}/files/{sid}/{state['images']['wplus']}")[0] == 404  # the clcae result is gone
    assert image(base, sid, other["images"]["wplus"]).shape == (64, 64, 3)
    assert set(other["kinds"]) == {"wplus"} and other["paste_kind"] == "wplus"  # pSp has no w head, no F

    status, example, _ = request(base + "/api/example?name=astronaut", b"")
    assert status == 200 and json.loads(example)["faces_found"] == 1


def test_bad_uploads_are_refused_and_the_app_keeps_working(app):
    base, editor = app
    status, opened = open_photo(base, ASTRONAUT.read_bytes())
    sid = opened["session"]
    folders = sorted(p.name for p in editor.workdir.iterdir())

    status, answer = open_photo(base, b"\x00" * (editor.max_upload_bytes + 1))
    assert status == 413 and "limit is 2 MiB" in answer["error"]
    assert_still_works(base)
    status, answer = open_photo(base, b"#!/bin/sh\necho not a photo\n")
    assert status == 415 and answer["error"].startswith("not a usable image")
    assert_still_works(base)
    no_face = Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))).convert("RGB")
    status, answer = open_photo(base, jpeg(no_face))
    assert status == 422 and answer["error"].startswith("No face found in this photo")
    assert_still_works(base)
    status, answer = post_json(base + "/api/edit", {"session": sid, "strengths": {"smile": 99}})
    assert status == 400 and "within" in answer["error"]
    status, answer = post_json(base + "/api/edit", {"session": sid, "strengths": {"nose": 1}})
    assert status == 400 and "no direction nose" in answer["error"]
    status, answer = post_json(base + "/api/edit", {"session": "x" * 22, "strengths": {}})
    assert status == 400 and "expired" in answer["error"]
    status, body, _ = request(base + "/api/edit", b"not json", headers={"Content-Type": "application/json"})
    assert status == 400
    assert sorted(p.name for p in editor.workdir.iterdir()) == folders  # refused photos leave nothing behind
    # the photo opened before the bad requests is still there and still edits
    status, edit = post_json(base + "/api/edit", {"session": sid, "strengths": {"yaw": 1.5}})
    assert status == 200 and image(base, sid, edit["images"]["pasted"]).shape == (512, 512, 3)


def test_only_a_sessions_own_files_are_served(app):
    base, editor = app
    status, opened = open_photo(base, ASTRONAUT.read_bytes())
    sid = opened["session"]
    session = editor.session(sid)
    assert sorted(p.name for p in session.folder.iterdir() if p.is_file()) == ["upload"]  # never a client's name
    assert (session.folder / "result001" / "index.html").is_file()  # written by the pipeline, never registered
    for rel in ("upload", "result001/index.html", "../" + sid + "/upload", "%2e%2e/%2e%2e/etc/passwd",
                "result001/../upload"):
        status, body, _ = request(f"{base}/files/{sid}/{rel}")
        assert status in (400, 404), rel
    status, body, _ = request(f"{base}/files/{'A' * 22}/{opened['images']['pasted']}")
    assert status == 400  # another (unknown) session cannot read it
    status, body, _ = request(base + "/api/config", headers={"Host": "attacker.example:7860"})
    assert status == 403
    assert_still_works(base)


def test_two_users_at_once_do_not_mix(app):
    """Two photos (the astronaut and its mirror image) opened and edited at the same time from two threads: each
    session's pasted results are its own photo."""
    base, _ = app
    photos = {"plain": Image.open(ASTRONAUT).convert("RGB")}
    photos["mirror"] = ImageOps.mirror(photos["plain"])
    results: dict[str, tuple] = {}
    start = threading.Barrier(2)

    def user(name: str) -> None:
        start.wait()
        status, state = open_photo(base, jpeg(photos[name]))
        assert status == 200, state
        status, edit = post_json(base + "/api/edit", {"session": state["session"], "strengths": {"smile": 2}})
        assert status == 200, edit
        results[name] = (state, edit)

    threads = [threading.Thread(target=user, args=(name,)) for name in photos]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(results) == {"plain", "mirror"}
    assert results["plain"][0]["session"] != results["mirror"][0]["session"]
    for name, (state, edit) in results.items():
        own = np.asarray(photos[name], dtype=np.int16)
        other = np.asarray(photos["mirror" if name == "plain" else "plain"], dtype=np.int16)
        got = image(base, state["session"], edit["images"]["pasted"])
        corner = (slice(0, 60), slice(0, 60))  # far from the face in both photos
        assert np.abs(got[corner] - own[corner]).mean() < 4 < np.abs(got[corner] - other[corner]).mean(), name


def test_least_recently_used_sessions_close(app):
    base, editor = app
    first = open_photo(base, ASTRONAUT.read_bytes())[1]["session"]
    for _ in range(editor.max_sessions):
        open_photo(base, ASTRONAUT.read_bytes())
    status, answer = post_json(base + "/api/edit", {"session": first, "strengths": {"smile": 1}})
    assert status == 400 and "expired" in answer["error"]
    assert not (editor.workdir / first).exists()


def test_command_refuses_bad_arguments(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        console.main(["app", "--port", "70000"])
    assert e.value.code == 2 and "expected a port 0..65535" in capsys.readouterr().err
    assert console.main(["app", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert console.main(["app", "--directions", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err
    if default_models():
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            assert console.main(["app", "--port", str(taken.getsockname()[1])]) == 2
        assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
