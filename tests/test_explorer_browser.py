"""The explorer in a real browser (Debian's headless Chromium through Selenium): open a
feature page, save an annotation, reload, see it; it saves a screenshot (the README's
come from docs/make_screenshots.py, the same browser on the demo run). Runs in CI, where
.ci/run installs chromium and sets SAEX_REQUIRE_BROWSER=1."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # a real browser on the explorer served by a subprocess

ROOT = Path(__file__).resolve().parents[1]


def _browser_or_skip():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None
    if not (chromium and driver):
        if os.environ.get("SAEX_REQUIRE_BROWSER"):
            pytest.fail("chromium, chromedriver and selenium are required here (SAEX_REQUIRE_BROWSER is set)")
        pytest.skip("no chromium/chromedriver/selenium on this machine (.ci/run installs them)")
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    chromium, driver = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1400,1100"):
        opts.add_argument(a)
    opts.binary_location = chromium
    d = webdriver.Chrome(options=opts, service=Service(driver))
    yield d
    d.quit()


@pytest.fixture
def app_server(indexed_run, tmp_path):
    root, run = indexed_run
    port = _free_port()
    env = dict(os.environ, SAEX_ANNOTATIONS=str(tmp_path / "ann.sqlite"))
    proc = subprocess.Popen([sys.executable, "-m", "saex", "explore", str(run), "--root", str(root),
                             "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the explorer did not start: " + (proc.stdout.read() if proc.stdout else ""))
    yield f"http://127.0.0.1:{port}", run, tmp_path / "ann.sqlite"
    proc.terminate()
    proc.wait(timeout=20)


def _wait_text(d, text, timeout=60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(d, timeout).until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), text))


def _wait_element(d, xpath, timeout=60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, timeout).until(EC.presence_of_element_located((By.XPATH, xpath)))


def test_annotate_a_feature_in_a_real_browser(browser, app_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, run, db = app_server
    shots = Path(os.environ.get("SAEX_SCREENSHOTS", tmp_path))  # docs/make_screenshots.py sets it
    d = browser
    d.get(f"{url}/feature?run={run}&feature=3")
    _wait_text(d, "Top activations")
    _wait_text(d, "#3")
    label = _wait_element(d, "//input[@aria-label='label']")
    label.send_keys("<b>test</b> label from the browser")
    author = d.find_element(By.XPATH, "//input[@aria-label='author']")
    author.send_keys(Keys.CONTROL, "a")
    author.send_keys("browser-test")
    d.find_element(By.XPATH, "//button[.//p[text()='save']]").click()
    _wait_text(d, "saved feature 3, version 1")
    d.execute_script("window.scrollTo(0, 0)")
    assert d.save_screenshot(str(shots / "feature.png"))

    d.refresh()
    _wait_text(d, "Top activations")
    _wait_text(d, "#3 · <b>test</b> label from the browser")  # escaped: the tags show as text
    assert _wait_element(d, "//input[@aria-label='label']").get_attribute("value") == \
        "<b>test</b> label from the browser"
    assert not d.find_elements(By.XPATH, "//h3//b[text()='test']")  # never rendered as HTML

    from sae.labels.records import SAEKey
    from sae.labels.store import AnnotationStore
    from sae.runs.load import load_sae

    got = AnnotationStore(db).get(SAEKey.from_sae(load_sae(run)), 3)
    assert got.author == "browser-test" and got.version == 1
