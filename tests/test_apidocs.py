"""``/docs`` and ``/redoc`` load nothing from other hosts: every asset is vendored and served by the API."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from service.apidocs import VENDOR_DIR

URLS = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


def referenced(html: str) -> list[str]:
    return [a or b for a, b in URLS.findall(html)]


def test_docs_and_redoc_reference_only_local_assets(client: TestClient) -> None:
    for page, needed in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc.standalone.js"})):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
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
