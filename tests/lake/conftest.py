"""Fixtures of the lake tests: a real S3-compatible server (``eventador.testing.seaweed``),
started once per session and stopped by its pid; tests that need it are skipped, saying why,
when it cannot start (never a mock S3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("deltalake", reason="the lake tests need the eventador[lake] extra")

from eventador.testing.seaweed import WeedServer


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """A running SeaweedFS S3 server for the session; skips (saying why) when it cannot start."""
    yield from _running(tmp_path_factory.mktemp("weed"), "the S3 lake tests need a real SeaweedFS server")


@pytest.fixture
def s3_lake(weed: WeedServer) -> tuple[str, dict[str, str]]:
    """A lake URI in a new bucket of the session's server, and its storage options."""
    return f"s3://{weed.bucket()}/events", weed.storage_options


@pytest.fixture
def own_weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """A SeaweedFS server of the test's own, which the test may kill (the session's stays up)."""
    yield from _running(tmp_path_factory.mktemp("weed-own"), "this test kills a real SeaweedFS server of its own")


def _running(folder: Path, needs: str) -> Iterator[WeedServer]:
    """A SeaweedFS server in `folder`, started, yielded and killed at the end; skips the test
    (saying what `needs` it) when the server does not start."""
    server = WeedServer(folder)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"{needs}, which did not start: {exc}")
    try:
        yield server
    finally:
        server.kill()
