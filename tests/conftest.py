"""Shared fixtures: a real Redis (flushed per test), a store in a temp folder, the API client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from models.redisconn import DEFAULT_URL, _answers, start_embedded, stop_embedded
from models.settings import Settings
from models.store import Store

TEST_DB = 15  # never the default database 0 that a developer's running stack uses


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when one answers, else an embedded one: a real server either way."""
    if _answers(DEFAULT_URL):
        yield DEFAULT_URL.rsplit("/", 1)[0] + f"/{TEST_DB}"
        return
    redis_dir = tmp_path_factory.mktemp("redis")
    url = start_embedded(redis_dir)
    yield url.rsplit("/", 1)[0] + f"/{TEST_DB}"
    stop_embedded(redis_dir)


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    conn = Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis: Redis) -> Settings:
    return Settings(
        home=tmp_path / "home",
        redis_url=redis_url,
        job_monitoring_interval_s=1,
        job_heartbeat_grace_s=2,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store(settings.home).ensure()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from service.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c
