"""The load-test report as a person sees it: a real report (`run --smoke` against the stand-in stack) opened in
headless Chromium over the DevTools protocol. Every plot must have decoded at its own size and the console must
show no error. The whole-page screenshot is taken into the test's temp directory; with UPDATE_SCREENSHOT=1 the test
also writes it (256 colours) to docs/img/report_in_browser.png, which docs/loadtest.md shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.tests.browser import CHROMIUM, MISSING, Chromium, png_size
from loadtest.tests.conftest import REPO

SCREENSHOT = REPO / "docs" / "img" / "report_in_browser.png"
WIDTH = 1100  # CSS pixels: the report's column is 1000 wide
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if CHROMIUM is None:
        pytest.skip(MISSING)
    tmp = tmp_path_factory.mktemp("browser")
    # the stand-in stack (loadtest/tests/fakestack.py): 4 workers, a 1 s background budget, as test_pipeline uses
    stack = subprocess.Popen([sys.executable, "-m", "loadtest.tests.fakestack", str(tmp), "4", "1.0"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not (tmp / "stack.json").exists():
            if stack.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fake stack did not start")
            time.sleep(0.05)
        out = tmp / "report"
        # a fresh interpreter: locust patches the standard library for gevent at import
        argv = [sys.executable, "-m", "loadtest", "--stack-file", str(tmp / "stack.json"), "--out", str(out), "run",
                "--smoke"]  # fmt: skip
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=200)
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
    finally:
        stack.terminate()
        stack.wait(timeout=10)
    yield out


@pytest.mark.timeout(300)
def test_every_plot_renders_in_chromium_without_console_errors(report: Path, tmp_path: Path) -> None:
    plots = {p.stem: png_size(p.read_bytes()) for p in report.glob("*.png")}
    assert len(plots) >= 5, f"a smoke report has at least five plots, this one {sorted(plots)}"
    shot = tmp_path / SCREENSHOT.name
    with Chromium(width=WIDTH) as browser:
        page = browser.open(report / "index.html")
        images = page.images()
        width, height = page.screenshot(shot, WIDTH)
        errors = page.errors
    broken = [i for i in images if not i["complete"] or i["width"] == 0]
    assert not broken, f"plots that did not render: {broken}"
    # each plot once, decoded at the size of its PNG file
    assert {i["alt"]: (i["width"], i["height"]) for i in images} == plots
    assert len(images) == len(plots)
    assert errors == [], errors
    assert width == WIDTH and height > 2000, (width, height)
    from PIL import Image

    with Image.open(shot) as im:
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is None or len(colors) > 100, "the screenshot is (nearly) blank"
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            # 256 colours: flat colours and antialiased lines; 577 -> 245 KiB in the repository (measured)
            im.convert("RGB").quantize(256).save(SCREENSHOT, optimize=True)
            shot = SCREENSHOT
    print(f"{len(images)} plots rendered; screenshot {width}x{height} px, {shot.stat().st_size // 1024} KiB: {shot}")


def test_the_check_sees_a_broken_plot_and_a_console_error(report: Path, tmp_path: Path) -> None:
    """The checks above can fail: the same report with one plot's data corrupted and a console.error added."""
    page_dir = tmp_path / "broken"
    shutil.copytree(report, page_dir)
    html = (page_dir / "index.html").read_text()
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,iVBORw0KGgoAAAA", html, count=1)
    html = html.replace("</body>", "<script>console.error('injected failure')</script></body>")
    (page_dir / "index.html").write_text(html)
    with Chromium(width=WIDTH) as browser:
        page = browser.open(page_dir / "index.html")
        images = page.images()
        errors = page.errors
    assert [i["width"] for i in images].count(0) == 1, images
    assert "console.error: injected failure" in errors, errors
