"""Redis resolution (configured, local, embedded), settings documentation, the store's atomicity."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis import Redis

import models.platform.redisconn as redisconn
from models.platform.errors import NotFoundError
from models.platform.settings import Settings
from models.platform.store import Store, atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def test_embedded_redis_starts_once_and_keeps_its_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redisconn, "DEFAULT_URL", "redis://127.0.0.1:1/0")  # nothing answers there
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    url = redisconn.resolve_url(settings)
    assert url.startswith("redis://127.0.0.1:") and url != redisconn.DEFAULT_URL
    try:
        assert redisconn.resolve_url(settings) == url  # a second process finds the same server
        Redis.from_url(url).set("drawai:test", "kept")
    finally:
        assert redisconn.stop_embedded(settings.home.resolve() / "redis")
    assert not redisconn._answers(url)
    url2 = redisconn.resolve_url(settings)  # restarted: the append-only file brings the data back
    try:
        assert Redis.from_url(url2).get("drawai:test") == b"kept"
        assert (settings.home / "redis" / "appendonly.aof").exists()
    finally:
        redisconn.stop_embedded(settings.home.resolve() / "redis")


def test_configured_redis_url_wins(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, _env_file=None)  # type: ignore[call-arg]
    assert redisconn.resolve_url(settings) == redis_url
    assert redisconn.connect(settings).ping()


def test_docs_document_every_setting() -> None:
    """Every ``Settings`` field has a row in docs/settings.md; the README stays the short front door."""
    table = (DOCS / "settings.md").read_text()
    documented = set(re.findall(r"^\| `(DRAWAI_[A-Z0-9_]+)` \|", table, re.M))
    expected = {f"DRAWAI_{name.upper()}" for name in Settings.model_fields}
    assert expected <= documented, expected - documented
    assert len(README.read_text()) < 8000


def test_docs_links_resolve() -> None:
    """Every relative link of the README and the docs names a page (and a heading) that exists."""
    pages = [README, *sorted(DOCS.glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#([a-z0-9-]+))?\)", page.read_text()):
            path, anchor = (page.parent / target[0]).resolve(), target[1]
            assert path.is_file(), (page.name, target)
            if anchor:
                headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                            for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}  # fmt: skip
                assert anchor in headings, (page.name, target)


def test_store_ids_cannot_escape(store: Store) -> None:
    for bad in ("../etc", "a/b", "..", "", ".hidden", "x" * 65):
        with pytest.raises(NotFoundError):
            store.dataset_dir(bad)


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.json"
    atomic_write_bytes(target, b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("models.platform.store.os.fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temp file left behind
