"""Screenshots of the web console: docs/img/console_datasets.png and console_job.png, or every page.

Starts an embedded Redis, the API (keys set, the reader test on) and a burst worker in a temporary store, uploads
the bundled demo slices through the datasets page, trains a small model from the training form, and photographs
the pages in Debian's chromium (Playwright, never a downloaded browser)::

    .venv/bin/python scripts/console_screenshots.py --out docs/img            # the two committed ones
    .venv/bin/python scripts/console_screenshots.py --out /tmp/shots --all    # every page (trains to the end)
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import uvicorn
from PIL import Image
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.platform.redisconn import free_port, start_embedded, stop_embedded  # noqa: E402
from models.platform.settings import Settings  # noqa: E402

KEY = "console-screenshots"
SPEC = {"kimg": "4", "seed": "3"}  # the quick preset (a FastGAN at 64 px), shortened


def demo_zip(folder: Path) -> Path:
    path = folder / "mni152_axial.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for png in sorted((ROOT / "data" / "demo" / "mni152_axial").glob("*.png")):
            zf.write(png, f"mni152/{png.name}")
        zf.writestr("mni152/README.txt", "not an image: reported as skipped")
    path.write_bytes(buf.getvalue())
    return path


def serve(settings: Settings) -> tuple[str, uvicorn.Server]:
    from service.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def shoot(page: Page, path: Path, height: int | None = None) -> None:
    page.screenshot(path=str(path), full_page=height is None, clip=None if height is None else
                    {"x": 0, "y": 0, "width": 1100, "height": height})  # fmt: skip
    Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)  # a small PNG for the repo
    print("wrote", path)


def walk(page: Page, base: str, settings: Settings, out: Path, every: bool, folder: Path) -> None:
    page.goto(base + "/")
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    page.wait_for_selector("body[data-ready=true]")
    page.set_input_files("#file-input", str(demo_zip(folder)))
    page.locator("#report").wait_for(state="visible")
    page.wait_for_function("document.querySelector('#report-preview').naturalWidth > 0")
    shoot(page, out / "console_datasets.png", 870)
    page.click("#report-train")
    page.wait_for_selector("body[data-ready=true]")
    page.select_option("#f-preset", "quick")
    for name, value in SPEC.items():
        page.fill(f"input[name={name}]", value)
    page.fill("input[name=batch_size]", "100")  # refused: more than the training split
    page.click("#train-submit")
    page.wait_for_selector("#form-errors:not([hidden])")
    if every:
        shoot(page, out / "console_training.png")
    page.fill("input[name=batch_size]", "16")
    page.click("#train-submit")
    page.wait_for_selector("body[data-ready=true] #job-id")
    env = {**os.environ, "DRAWAI_HOME": str(settings.home), "DRAWAI_REDIS_URL": str(settings.redis_url),
           "DRAWAI_EVAL_SYNTHETIC_COUNT": "64", "DRAWAI_WORKER_METRICS_PORT": "0", "DRAWAI_API_KEYS": ""}  # fmt: skip
    cmd = [sys.executable, "-m", "drawai.cli", "worker", "--burst"]
    worker = subprocess.Popen(cmd, env=env)
    page.wait_for_function("document.querySelector('#job-progress').value > 0.5", timeout=600_000)
    page.wait_for_function("document.querySelector('#job-grid').naturalWidth > 0", timeout=300_000)
    shoot(page, out / "console_job.png", 520)
    if not every:
        page.click("#cancel")  # the two pictures of the docs are taken: the job stops at its next step
        page.wait_for_selector("body[data-ended=true]", timeout=300_000)
        worker.wait()
        return
    page.wait_for_selector("body[data-ended=true]", timeout=900_000)
    worker.wait()
    if every:
        shoot(page, out / "console_job_done.png")
        for name in ("jobs", "models"):
            page.goto(f"{base}/console/{name}")
            page.wait_for_selector("body[data-ready=true]")
            shoot(page, out / f"console_{name}.png")
    page.goto(base + "/console/generate")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#g-count", "16")
    page.fill("#g-seed", "42")
    page.click("#g-show")
    page.wait_for_function("document.querySelectorAll('#g-images img').length === 16")
    shoot(page, out / "console_generate.png", 620)
    if every:  # (always true here)
        page.goto(base + "/quiz")
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#q-reader", "reader one")
        page.click("#quiz-start button[type=submit]")
        page.wait_for_selector("#q-board:not([hidden])")
        shoot(page, out / "console_quiz.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--all", action="store_true", help="every page, not only the two in the docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = start_embedded(folder / "redis")
        settings = Settings(home=folder / "home", redis_url=url, api_keys=KEY, quiz_enabled=True,  # type: ignore[arg-type]
                            _env_file=None)  # type: ignore[call-arg]  # fmt: skip
        base, server = serve(settings)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                walk(page, base, settings, args.out, args.all, folder)
                page.goto("about:blank")
                browser.close()
        finally:
            server.should_exit = True
            stop_embedded(folder / "redis")


if __name__ == "__main__":
    main()
