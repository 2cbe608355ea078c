"""explore.ipynb in a real browser: `make lab` on a free port, headless Chromium (Debian's chromium and
chromium-driver, which `make ci-deps` installs) through selenium, on the tiny runs of tests/viz_fixtures.py.

The test runs the notebook as a person does (Run All), then changes the class pair and k, and checks after each
change that the figure was drawn again and that no error or traceback shows. Screenshots go to $APIKIT_ARTEFACTS
when it is set (CI keeps them), else to the test's tmp folder. The Lab server is stopped by the pid the test started.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from viz_fixtures import ROOT, SYN

MISSING = [c for c in ("chromium", "chromedriver") if shutil.which(c) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"no {' or '.join(MISSING)}: `make ci-deps` installs Debian's "
                                "chromium and chromium-driver (as root), which the browser test drives")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(what, check, timeout=90, every=0.25):
    """`check()`'s first true value within `timeout` seconds, else a failure naming `what`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def lab(runs, tmp_path):
    """`make lab` on a free port; it serves the project, where a copy of explore.ipynb whose parameters name copies of
    the tiny runs waits in scratch/ (git-ignored, the README's place for copies; removed after), as
    (url, token, the copy's path under the project)."""
    for name in ("api", "baseline"):
        shutil.copytree(runs["tmp"] / "runs" / name, tmp_path / name)
    nb = nbformat.read(ROOT / "notebooks" / "explore.ipynb", as_version=4)
    options = dict(data_path=str(runs["root"]), synthetic=SYN, size=128, resize=144, bs=12)
    nb.cells[1].source = (f"baseline_run = {str(tmp_path / 'baseline')!r}\napi_run = {str(tmp_path / 'api')!r}\n"
                          f"options = {options!r}")
    copy = ROOT / "scratch" / f"test-explore-{os.getpid()}-{os.urandom(4).hex()}"
    copy.mkdir(parents=True)
    nbformat.write(nb, copy / "explore.ipynb")
    port, token = free_port(), os.urandom(12).hex()
    args = [f"--no-browser --port {port} --ServerApp.token={token} --LabApp.expose_app_in_browser=True",
            "--allow-root" if os.geteuid() == 0 else ""]
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("APIKIT_DEBUG", None)
    log = open(tmp_path / "lab.log", "wb")
    # The project's own target, from this interpreter's environment; its install stamp is taken as made (-o).
    proc = subprocess.Popen(["make", "--no-print-directory", "-C", str(ROOT), f"VENV={sys.prefix}",
                             "-o", f"{sys.prefix}/.apikit-installed", "lab", f"LAB_ARGS={' '.join(args)}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                return json.load(r) is not None
        except OSError:
            assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            return False
    try:
        until("JupyterLab to answer", up, timeout=60)
        yield url, token, copy.relative_to(ROOT) / "explore.ipynb"
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(copy, ignore_errors=True)


def stop(proc):
    """End make, jupyter lab and its kernel: the process group of the pid this test started (its own session)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,2200"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield driver
    driver.quit()


def test_explore_notebook_in_a_browser(lab, browser, tmp_path, request):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    url, token, notebook = lab
    shots = Path(os.environ.get("APIKIT_ARTEFACTS", tmp_path)) / "explore"
    shots.mkdir(parents=True, exist_ok=True)
    d = browser
    d.get(f"{url}/lab/tree/{notebook.as_posix()}?token={token}")
    ready = ("const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
             "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
             " && w.sessionContext.session.kernel.status === 'idle');")
    until("the notebook and its kernel", lambda: d.execute_script(ready))
    d.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    figure = "//div[contains(@class,'jp-OutputArea')]//img[contains(@class,'widget-image')]"
    src = lambda: (d.find_elements(By.XPATH, figure) or [None])[0]

    def drawn(before=None):
        img = src()
        now = img.get_attribute("src") if img is not None else None
        return now if now and now != before and img.size["width"] > 100 else None

    def no_errors(step):
        text = " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output"))
        errors = d.find_elements(By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.stderr'], .jp-RenderedText "
                                 "pre .ansi-red-fg")
        refused = d.find_elements(By.CSS_SELECTOR, ".widget-html span[style*='b00020']")  # the widget's error line
        assert "Traceback" not in text and not errors and not refused, f"{step}: {text[-2000:]}"

    # The page as it was when a step failed, beside the others.
    request.addfinalizer(lambda: d.save_screenshot(str(shots / "last.png")))
    first = until("the first figure", drawn, timeout=120)
    d.save_screenshot(str(shots / "1-opened.png"))
    no_errors("opened")
    pair = Select(d.find_element(By.XPATH, "//div[contains(@class,'widget-dropdown')][.//label[text()='class pair']]"
                                           "//select"))
    assert len(pair.options) >= 2 and all("confused)" in o.text for o in pair.options)
    pair.select_by_index(1)
    second = until("the figure of the second class pair", lambda: drawn(first))
    d.save_screenshot(str(shots / "2-class-pair.png"))
    no_errors("class pair changed")
    readout = d.find_element(By.XPATH, "//div[contains(@class,'widget-slider')][.//label[text()='top k']]"
                                       "//div[contains(@class,'widget-readout')]")
    readout.click()
    readout.send_keys(Keys.CONTROL, "a")
    readout.send_keys("9", Keys.ENTER)
    until("the figure at k = 9", lambda: drawn(second))
    d.save_screenshot(str(shots / "3-k-9.png"))
    no_errors("k changed")
    status = d.find_element(By.XPATH, "//div[contains(@class,'widget-html')]//span[contains(., 'redrawn in')]").text
    assert "(no forward pass)" in status, status
    # The atlas of the figure's first channel, picked from the figure's channel list.
    channel = Select(d.find_element(By.XPATH, "//div[contains(@class,'widget-dropdown')]"
                                              "[.//label[text()='or of the figure']]//select"))
    channel.select_by_index(0)
    d.find_element(By.XPATH, "//button[contains(., 'Show atlas')]").click()
    atlas = "//div[contains(@class,'jp-OutputArea')]//img[contains(@class,'widget-image')]"
    until("the channel atlas", lambda: len([i for i in d.find_elements(By.XPATH, atlas)
                                            if i.get_attribute("src") and i.size["width"] > 100]) == 2, timeout=120)
    d.save_screenshot(str(shots / "4-atlas.png"))
    no_errors("atlas shown")
    said = d.find_element(By.XPATH, "//div[contains(@class,'widget-html')]//span[contains(., 'atlas of channel')]").text
    assert said.startswith(f"atlas of channel {channel.first_selected_option.text.split()[1]} in "), said
