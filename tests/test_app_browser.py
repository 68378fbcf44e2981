"""Real-browser tests (marked ``browser``): headless Chromium, driven by Selenium through Debian's chromedriver.

- ``clcae app`` on a free local port, through the whole path on the bundled astronaut: upload -> face found and
  aligned -> w / W+ / W+F reconstructions shown -> a slider moved with the keyboard changes the pasted-back output
  -> the downloads answer; then a photo with no face, a file that is not an image, one over the size limit, and the
  example picker in one page (the error message is shown, and the app keeps working). A screenshot of the edited
  page is saved (to ``$CLCAE_APP_SCREENSHOT`` when set; docs/app.png is made that way).
- the HTML report of ``clcae eval``: every image loads, the tables are there.

Needs ``chromium`` and ``chromium-driver`` (Debian) on PATH, the ``selenium`` package, the [align] extra and the
shipped models; each missing piece skips the module with its name (``.ci/run`` installs them).
"""
from __future__ import annotations

import base64
import io
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("one_thread")]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs Debian's chromium and chromium-driver (apt install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from clcae import console  # noqa: E402
from clcae.pretrained import SYNTHFACES_CLCAE, SYNTHFACES_DIRECTIONS, pretrained_dir, shipped  # noqa: E402

TIMEOUT = 120  # seconds for one step (an inversion on a busy 2-core CPU takes one or two)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium as the probe of this machine starts it: no sandbox (root), no GPU, no background
    networking (the machine's closed network would refuse it), a new empty profile."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1250",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    pytest.importorskip("dlib", reason="needs the [align] extra: pip install -e .[align]")
    from clcae.align.detect import AlignExtraMissing, FaceDetector
    from clcae.app import default_models
    from clcae.app.editor import PhotoEditor
    from clcae.app.server import make_server, serve_in_thread

    models = default_models()
    if not models:
        pytest.skip("the shipped SynthFaces inverters are not in pretrained/")
    try:
        detector = FaceDetector()
    except AlignExtraMissing as e:
        pytest.skip(str(e))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    editor = PhotoEditor(models, pretrained_dir() / SYNTHFACES_DIRECTIONS, detector=detector,
                         workdir=tmp_path_factory.mktemp("app"))
    server = make_server(editor, "127.0.0.1", 0)
    serve_in_thread(server)
    yield server.url
    server.shutdown()
    server.server_close()
    editor.close()
    torch.set_num_threads(n)


def wait(driver, condition, message: str):
    try:
        return WebDriverWait(driver, TIMEOUT, poll_frequency=0.1).until(lambda d: condition(d), message)
    except TimeoutException:
        error = driver.find_element(By.ID, "error").text
        status = driver.find_element(By.ID, "status").text
        raise AssertionError(f"{message} (page error: {error!r}; status: {status!r})") from None


def loaded(driver, element_id: str) -> bool:
    """The image element has finished loading a picture (not a broken image)."""
    return driver.execute_script("const i = document.getElementById(arguments[0]); "
                                 "return i.complete && i.naturalWidth > 0;", element_id)


def fetch_image(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"), dtype=np.int16)


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1",
         "the page did not load its configuration")


def upload(driver, path: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))


def test_app_whole_path_in_a_browser(browser, app, tmp_path):
    from clcae.app.server import EXAMPLES

    open_page(browser, app)
    assert browser.find_element(By.ID, "model").get_attribute("value") == "clcae (SynthFaces)"
    upload(browser, EXAMPLES / "astronaut.jpg")
    wait(browser, lambda d: d.find_element(By.ID, "result").is_displayed(), "no result after the upload")
    steps = ["img-detected", "img-aligned", "img-rec-w", "img-rec-wplus", "img-rec-wplus_f", "img-pasted"]
    wait(browser, lambda d: all(loaded(d, i) for i in steps), "the step images did not load")
    assert "Out of domain" in browser.find_element(By.ID, "note").text
    assert "Found 1 face(s)" in browser.find_element(By.ID, "status").text
    assert not browser.find_element(By.ID, "error").is_displayed()
    sliders = browser.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")
    assert sorted(s.get_attribute("data-direction") for s in sliders) == ["age", "glasses", "smile", "yaw"]

    before = browser.find_element(By.ID, "img-pasted").get_attribute("src")
    smile = browser.find_element(By.ID, "slider-smile")
    smile.click()  # the middle of the track: 0
    smile.send_keys(*[Keys.ARROW_RIGHT] * 25)  # +2.5 in steps of 0.1, as a user would with the keyboard
    wait(browser, lambda d: d.find_element(By.ID, "value-smile").text == "2.5", "the slider did not move")
    wait(browser, lambda d: "Edited: smile 2.5" in d.find_element(By.ID, "status").text
         and loaded(d, "img-pasted"), "no edit after moving the slider")
    after = browser.find_element(By.ID, "img-pasted").get_attribute("src")
    assert after != before
    original, edited = fetch_image(before), fetch_image(after)
    assert original.shape == edited.shape == (512, 512, 3)
    assert np.abs(edited - original).mean() > 0.2  # the slider changed the pasted-back photo ...
    # ... inside the face's crop only (x 134..316, y 16..197 on this photo): the left strip and the bottom stay
    assert np.array_equal(edited[:, :120], original[:, :120]) and np.array_equal(edited[240:], original[240:])
    for kind in ("w", "wplus", "wplus_f"):
        assert loaded(browser, f"img-edit-{kind}")

    for link in ("download-image", "download-latents"):
        href = browser.find_element(By.ID, link).get_attribute("href")
        with urllib.request.urlopen(href, timeout=TIMEOUT) as r:
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"] and r.read()

    shot = Path(os.environ.get("CLCAE_APP_SCREENSHOT") or tmp_path / "app.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return Math.ceil(document.body.getBoundingClientRect().bottom) + 24")
    png = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                              "clip": {"x": 0, "y": 0, "width": 1400,
                                                                       "height": height, "scale": 1}})["data"]
    shot.write_bytes(base64.b64decode(png))
    assert Image.open(shot).size == (1400, height)


def test_app_no_face_bad_file_and_example(browser, app, tmp_path):
    open_page(browser, app)
    no_face = tmp_path / "no_face.png"  # a smooth gradient: no face for any detector
    Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))).convert("RGB").save(no_face)
    upload(browser, no_face)
    wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed(), "no error for a photo without a face")
    assert browser.find_element(By.ID, "error").text.startswith("No face found in this photo")
    assert not browser.find_element(By.ID, "result").is_displayed()

    fake = tmp_path / "holiday.jpg"  # named like a photo, but text
    fake.write_text("this is not an image\n")
    upload(browser, fake)
    wait(browser, lambda d: "not a usable image" in d.find_element(By.ID, "error").text,
         "no error for a file that is not an image")

    big = tmp_path / "big.jpg"  # over the 10 MiB limit: refused before anything is sent
    big.write_bytes(b"\xff\xd8" + b"\x00" * (10 * 2 ** 20))
    upload(browser, big)
    wait(browser, lambda d: "the limit is 10 MiB" in d.find_element(By.ID, "error").text,
         "no error for a file over the size limit")

    browser.find_element(By.ID, "use-example").click()  # the app still works after all three
    wait(browser, lambda d: d.find_element(By.ID, "result").is_displayed() and loaded(d, "img-pasted"),
         "the example did not open after the bad uploads")
    assert not browser.find_element(By.ID, "error").is_displayed()


@pytest.mark.skipif(shipped(SYNTHFACES_CLCAE) is None, reason="the shipped CLCAE model is not in pretrained/")
def test_eval_report_in_a_browser(browser, tmp_path, capsys):
    out = tmp_path / "eval"
    status = console.main(["eval", "--method", f"clcae={shipped(SYNTHFACES_CLCAE)}", "--data", "synthfaces",
                           "--n", "4", "--batch", "4", "--save-images", "2", "--device", "cpu", "--no-progress",
                           "--out", str(out)])
    capsys.readouterr()
    assert status == 0
    browser.get((out / "report.html").resolve().as_uri())
    wait(browser, lambda d: d.execute_script("return document.readyState") == "complete", "report did not load")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);")
    assert len(images) >= 2 * 4, images  # 2 saved images x (input + w, W+, W+F)
    assert all(ok for _, ok in images), [src for src, ok in images if not ok]
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.results tbody tr')).map(r => r.innerText);")
    assert len(rows) == 3 and all(r.startswith("clcae") for r in rows), rows  # w, W+, W+F
    headers = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.results th')).map(h => h.innerText);")
    assert any("MSE" in h.upper() for h in headers), headers
