"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from assets vendored in ``service/static/vendor``.

FastAPI's own pages load their scripts, styles, fonts and favicon from public CDNs, and are blank offline. The app
is created with ``docs_url=None, redoc_url=None``; ``install(app)`` serves the same pages with every asset from
``/static/vendor/...`` (versions and licences: ``service/static/vendor/README.md``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
VENDOR_URL = "/static/vendor"
# Swagger UI's options: no validator badge (it would call validator.swagger.io), the defaults FastAPI sets otherwise.
SWAGGER_PARAMETERS = {"validatorUrl": None, "deepLinking": True, "showExtensions": True, "showCommonExtensions": True}
# The pages may load nothing from another host: ReDoc's footer <img> of cdn.redoc.ly, hard-coded in its bundle, is
# refused by the browser (the image hides itself when it fails). Inline scripts and styles: FastAPI's page and the
# bundles' own; blob: workers: ReDoc's search.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)


def _prefix(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def install(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets on ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    app.mount(VENDOR_URL, StaticFiles(directory=VENDOR_DIR), name="vendor")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _prefix(request)
        assets = f"{root}{VENDOR_URL}/swagger-ui"
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _prefix(request)
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{VENDOR_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{VENDOR_URL}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page
