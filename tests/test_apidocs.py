"""``/docs`` and ``/redoc`` load nothing from other hosts: every asset is vendored and served by the API."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from models.platform.settings import Settings
from models.platform.store import Store
from service.apidocs import VENDOR_DIR
from tests.live import serve

URLS = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


def referenced(html: str) -> list[str]:
    return [a or b for a, b in URLS.findall(html)]


def test_docs_and_redoc_reference_only_local_assets(client: TestClient) -> None:
    for page, needed in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc.standalone.js"})):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]  # the browser fetches nothing elsewhere
        assert "cdn.jsdelivr" not in r.text and "fonts.googleapis" not in r.text
        assert not re.search(r"https?://", r.text), page  # no absolute URL at all: nothing from another host
        urls = referenced(r.text)
        assert needed <= {u.rsplit("/", 1)[-1] for u in urls}, urls
        for url in urls:
            assert url.startswith("/"), url
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert asset.content, url


def test_vendored_files_have_their_licences() -> None:
    for folder in ("swagger-ui", "redoc"):
        assert (VENDOR_DIR / folder / "LICENSE").stat().st_size > 0
    readme = (VENDOR_DIR / "README.md").read_text()
    assert "swagger-ui-dist" in readme and "5.35.0" in readme and "2.5.4" in readme


def test_assets_are_package_data() -> None:
    """The vendored folder is in pyproject's package data, so a wheel (and the API image) carries it."""
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"static/vendor/**/*"' in pyproject


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make's tools step installs it)")
def test_docs_render_in_a_browser_that_reaches_no_other_host(settings: Settings, store: Store) -> None:
    """Swagger UI and ReDoc draw the API's operations in a real browser whose requests to any host but the API's
    would be refused: they need nothing from the internet, and ask for nothing there (ReDoc's bundle has the URL of
    a logo on its CDN: the pages' Content-Security-Policy stops the browser before it asks)."""
    from playwright.sync_api import Route, sync_playwright

    elsewhere: list[str] = []

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with serve(settings) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/*", only_local)
            page.goto(f"{base}/docs")
            page.locator('.opblock-summary-path[data-path="/jobs/{job_id}/events"]').wait_for()
            page.goto(f"{base}/redoc")
            page.get_by_text("/jobs/{job_id}/events").first.wait_for(state="attached")
            assert errors == [], errors
        finally:
            browser.close()
    assert elsewhere == []
