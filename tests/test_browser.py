"""The web console in a real browser: Debian's chromium driven by Playwright, against the real app (uvicorn on a
free port, API keys set, the reader test on), the real Redis and a real burst worker.

One walk through the console: the key gate, a drag-and-drop upload and its report (with a skipped file), a
refused spec's messages beside the form, a tiny job started from the form with its progress arriving live over
SSE until it finishes, images generated and the zip downloaded (its content checked), and the reader test
answered to the end with its result. Every wait is on a page condition. A failure leaves a screenshot and the
page's HTML in ``test-artifacts/browser/`` (gitignored).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright
from redis import Redis

from models.platform.settings import Settings
from tests.conftest import DEMO_SLICES, spawn_worker
from tests.live import serve

CHROMIUM = Path("/usr/bin/chromium")
KEY = "browser-test-key-8c2e4b"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
TIMEOUT_MS = 60_000
SLICES = 20  # demo slices uploaded (one numbered series: the held-out split takes slabs of it)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make's tools step installs it)")


def upload_zip() -> bytes:
    """20 real demo slices and a text file (reported as skipped), zipped as a user would upload them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for png in sorted(DEMO_SLICES.glob("*.png"))[:SLICES]:
            zf.write(png, f"mni/{png.name}")
        zf.writestr("mni/notes.txt", "not an image")
    return buf.getvalue()


@pytest.fixture
def browser_settings(tmp_path: Path, redis_url: str, redis: Redis) -> Settings:
    return Settings(
        home=tmp_path / "home",
        redis_url=redis_url,
        api_keys=KEY,  # type: ignore[arg-type]
        quiz_enabled=True,
        eval_synthetic_count=16,
        utility_budget_s=0,
        job_monitoring_interval_s=1,
        job_heartbeat_grace_s=2,
        sse_poll_interval_s=0.2,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


@contextmanager
def evidence(pg: Page, name: str, tmp_path: Path) -> Iterator[None]:
    """On failure: a screenshot and the page's HTML in test-artifacts/browser/ (and the screenshot in tmp_path).
    Any uncaught JavaScript error fails the test."""
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield
        assert errors == [], f"JavaScript errors: {errors}"
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.html").write_text(pg.content())
        shutil.copy(ARTIFACTS / f"{name}.png", tmp_path / "failure.png")
        raise
    finally:
        pg.goto("about:blank")  # closes any open event stream before the server stops


def enter_key(page: Page, base: str) -> None:
    pg = page
    pg.goto(base + "/")
    gate = pg.locator("#keygate")
    gate.wait_for(state="visible")
    assert pg.locator("#app").is_hidden()  # nothing shows before a key is accepted
    pg.fill("#key-input", "not-the-key")
    pg.click("#key-form button")
    pg.locator("#key-error").get_by_text("not accepted").wait_for()
    pg.fill("#key-input", KEY)
    pg.click("#key-form button")
    pg.wait_for_selector("body[data-ready=true]")


def drop_file(page: Page, selector: str, data: bytes, name: str) -> None:
    """A file dropped on ``selector`` (a real drop event with a DataTransfer holding the file)."""
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "application/zip" }));
            return dt;
        }""",
        [base64.b64encode(data).decode(), name],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def upload(pg: Page) -> str:
    drop_file(pg, "#drop", upload_zip(), "mni-slices.zip")
    pg.locator("#report").wait_for(state="visible")
    assert pg.locator("#upload-progress").get_attribute("value") == "100"
    assert int(pg.inner_text("#skipped-count")) >= 1  # notes.txt, and slices dropped beside the held-out slab
    assert "notes.txt" in (pg.text_content("#skipped") or "")
    pg.wait_for_function("document.querySelector('#report-preview').naturalWidth > 0")
    title = pg.inner_text("#report-title")
    return re.search(r"\((ds-\w+)\)", title).group(1)  # type: ignore[union-attr]


TINY = {"architecture": "dcgan", "image_size": "32", "width": "8", "latent_dim": "16", "batch_size": "8", "seed": "1"}


def start_job(pg: Page, dataset: str) -> str:
    pg.click("#report-train")
    pg.wait_for_selector("body[data-ready=true]")
    assert pg.input_value("#f-dataset") == dataset
    pg.select_option("#f-preset", "report")
    for name, value in TINY.items():
        if name == "architecture":
            pg.select_option("select[name=architecture]", value)
        else:
            pg.fill(f"input[name={name}]", value)
    pg.fill("input[name=epochs]", "0")  # refused: the 422's message shows beside it
    pg.click("#train-submit")
    error = pg.locator('.field-error[data-for="epochs"]')
    error.get_by_text("greater than or equal to 1").wait_for()
    pg.fill("input[name=epochs]", "1")
    pg.click("#train-submit")
    pg.wait_for_url(re.compile(r"/console/jobs/[\w-]+$"))
    pg.wait_for_selector("body[data-ready=true]")
    job = pg.get_attribute("#job-id", "data-job")
    assert job
    return job


def follow_job(pg: Page, settings: Settings) -> None:
    assert pg.inner_text("#job-status") == "queued"
    worker = spawn_worker(settings)  # the job was queued before any worker ran: every later state comes live
    try:
        pg.wait_for_function(
            "['training', 'exporting', 'evaluating', 'done'].includes(document.querySelector('#job-phase').textContent)"
        )
        pg.wait_for_selector("body[data-ended=true]", timeout=180_000)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert pg.inner_text("#job-status") == "finished"
    assert int(pg.inner_text("#job-updates")) >= 3  # queued, progress..., end
    assert pg.inner_text("#job-feed").startswith("live")
    assert pg.inner_text("#job-epoch") == "1 / 1"
    assert pg.inner_text("#job-model-link") == "v1"
    pg.wait_for_function("document.querySelector('#job-grid').naturalWidth > 0")


def generate_and_download(pg: Page, base: str, tmp_path: Path) -> None:
    pg.goto(base + "/console/generate")
    pg.wait_for_selector("body[data-ready=true]")
    pg.fill("#g-count", "4")
    pg.fill("#g-seed", "7")
    pg.click("#g-show")
    pg.wait_for_function("document.querySelectorAll('#g-images img').length === 4")
    assert "seeds 7–10" in pg.inner_text("#g-info")
    with pg.expect_download() as info:
        pg.click("#g-download")
    download = info.value
    assert download.suggested_filename == "drawai-v1-seed7.zip"
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    with zipfile.ZipFile(target) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        pngs = sorted(n for n in zf.namelist() if n.endswith(".png"))
    assert manifest["synthetic"] is True and manifest["model_version"] == "v1"
    assert [i["seed"] for i in manifest["images"]] == [7, 8, 9, 10]
    assert pngs == sorted(i["file"] for i in manifest["images"])


def answer_quiz(pg: Page, base: str) -> None:
    pg.goto(base + "/quiz")
    pg.wait_for_selector("body[data-ready=true]")
    pg.fill("#q-reader", "reader one")
    pg.click("#quiz-start button[type=submit]")
    pg.locator("#q-board").wait_for(state="visible")
    total = int(pg.inner_text("#q-total"))
    assert total >= 2 and total % 2 == 0
    for i in range(total):
        pg.wait_for_function(f"document.querySelector('#q-pos').textContent === '{i + 1}'")
        pg.wait_for_function("document.querySelector('#q-image').naturalWidth > 0")
        pg.keyboard.press("r" if i % 2 else "s")
    pg.wait_for_selector("body[data-results=true]")
    row = pg.inner_text("#q-readers tbody tr")
    assert row.startswith("reader one") and f"{total} / {total}" in row
    assert re.search(r"Pooled: \d+ of \d+ correct, accuracy \d+ %", pg.inner_text("#q-pooled"))


def test_console_end_to_end(page: Page, browser_settings: Settings, tmp_path: Path) -> None:
    with serve(browser_settings) as base, evidence(page, "console_end_to_end", tmp_path):
        enter_key(page, base)
        dataset = upload(page)
        start_job(page, dataset)
        follow_job(page, browser_settings)
        generate_and_download(page, base, tmp_path)
        answer_quiz(page, base)
