"""End to end: `groundkit serve` on a free local port, driven by headless Chromium as a person would.

Needs Debian's ``chromium`` (/usr/bin/chromium) and Playwright's Python package; Playwright
launches that Chromium and never downloads a browser. ``.ci/run`` installs Chromium and ``make
test`` Playwright (the test extra), and the test fails, never skips, when either is missing.
Deselect it locally with ``pytest -m "not browser"``. The screenshots land in the test's tmp dir.
"""
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from groundkit.app.server import EXAMPLES
from groundkit.hub import bundled_names

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
CAPTION = "There is [a large yellow ring] under [the sky]."
TIMEOUT_MS = 120_000  # a first prediction loads the model and the text encoder on a busy CPU


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: this test drives Debian's Chromium "
                    f"(apt-get install -y chromium; .ci/run installs it)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright's Python package is missing: pip install -e '.[test]' "
                    "(make test installs it)", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pbrec_checkpoint):
    """``groundkit serve --port 0`` in its own process (in an empty folder, so that no ./runs is
    offered); yields the URL it prints."""
    cwd = tmp_path_factory.mktemp("serve")
    threads = os.environ.get("GROUNDKIT_TEST_THREADS", "1")
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    process = subprocess.Popen(
        [sys.executable, "-m", "groundkit.cli", "serve", "--port", "0", "--device", "cpu",
         "--checkpoint", str(tiny_pbrec_checkpoint)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    printed = []
    try:
        while True:
            try:
                line = lines.get(timeout=120)
            except queue.Empty:
                pytest.fail(f"groundkit serve printed no address in 120 s: {printed}")
            printed.append(line)
            if line.startswith("groundkit serve: http://"):
                break
            assert process.poll() is None, f"groundkit serve stopped: {''.join(printed)}"
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:"), line  # loopback unless told otherwise
        expected = len(bundled_names()) + 1  # the bundled ones + the local referring checkpoint
        assert f"({expected} models;" in line, line
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def problems():
    """What went wrong in the page: script errors, and console errors (failed loads)."""
    return []


@pytest.fixture
def page(browser, server, problems):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.goto(server)
    page.wait_for_selector("#tab-grounding")
    yield page
    page.close()
    assert not problems


def run_and_wait(page):
    page.click("#run")
    page.wait_for_function("!document.getElementById('output').hidden || "
                           "!document.getElementById('error').hidden", timeout=TIMEOUT_MS)
    assert page.is_hidden("#error"), page.inner_text("#error")


def test_ground_an_uploaded_image_and_a_typed_caption(page, tmp_path):
    assert "synthetic benchmark" in page.inner_text("#note")  # what the bundled models know
    assert page.input_value("#model") == "ppmn-synthetic"
    page.set_input_files("#image", str(EXAMPLES / "synthetic-2000001.png"))
    page.fill("#text", CAPTION)
    run_and_wait(page)
    # the overlay: the image and one layer per phrase, loaded
    assert page.eval_on_selector("#base", "img => img.complete && img.naturalWidth") == 128
    assert page.eval_on_selector_all("#layers img", "imgs => imgs.map(i => i.naturalWidth)") \
        == [128, 128]
    assert page.locator("#regions tr").all_inner_texts()[0].split("\t")[1] == "a large yellow ring"
    assert page.locator("#shown-text mark").all_inner_texts() == ["a large yellow ring", "the sky"]
    # the JSON: what `groundkit predict` writes to result.json
    result = page.evaluate("JSON.parse(document.getElementById('json').textContent)")
    assert [p["utterance"] for p in result["phrases"]] == ["a large yellow ring", "the sky"]
    assert result["width"] == 128 and set(result["phrases"][0]["mask"]) == {"size", "counts"}
    # hovering a phrase highlights its mask and dims the others
    page.hover("#shown-text mark >> nth=1")
    assert "focus" in page.get_attribute("#stage", "class")
    assert page.eval_on_selector_all("#layers img", "imgs => imgs.map(i => i.className)") \
        == ["layer", "layer on"]
    page.screenshot(path=str(tmp_path / "grounding.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'grounding.png'}")


def test_segment_an_example_with_labels_on_the_segments(page, tmp_path):
    page.click("#tab-panoptic")
    assert page.is_hidden("#text-box") and page.input_value("#model") == "panoptic-synthetic"
    page.click(".examples button[data-file='coco-439180.jpg']")
    page.wait_for_selector("#chosen:not([hidden])")
    run_and_wait(page)
    labels = page.locator("#labels span:visible").all_inner_texts()
    rows = page.locator("#regions tr").count()
    assert labels and rows >= len(labels)
    page.screenshot(path=str(tmp_path / "panoptic.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'panoptic.png'}")


@pytest.mark.parametrize("which", ["pbrec-synthetic", "tiny_pbrec"])
def test_refer_with_the_bundled_and_a_local_checkpoint(page, which):
    page.click("#tab-referring")
    assert page.input_value("#model") == "pbrec-synthetic"  # the bundled one first
    local = [v for v in page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
             if v.endswith(which)]
    page.select_option("#model", local[0])
    page.click(".examples button[data-file='synthetic-2000004.png']")
    page.wait_for_selector("#chosen:not([hidden])")
    assert page.input_value("#text") == "large white shape"  # the example's expression
    run_and_wait(page)
    assert page.locator("#layers img").count() == 1
    assert "box" in page.evaluate("JSON.parse(document.getElementById('json').textContent)")


def test_a_file_that_is_no_image_gets_a_clear_message(page, problems, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not pixels")
    page.set_input_files("#image", str(notes))
    page.fill("#text", CAPTION)
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    assert page.inner_text("#error") == ("notes.txt is not an image groundkit reads: choose a PNG, "
                                         "JPEG, WebP or BMP image")
    assert [p for p in problems if "415" in p] and problems == [p for p in problems if "415" in p]
    problems.clear()  # the browser logs the refused upload: expected
