"""Fixtures: the wire-level stand-in (a fresh one per test, on a free 127.0.0.1 port, stopped afterwards) and, when
``BANANAS_TEST_ES_URL`` is set, a real cluster for the tests marked ``elasticsearch_live``.

``cluster`` is parametrized over both: a scenario written against it runs on the stand-in always and on the real
cluster when one is given (each run uses its own index prefix and deletes its indices, template and policy).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bananas_elasticsearch import build_client
from bananas_elasticsearch.templates import policy_name
from bananas_elasticsearch.testing import StandIn
from loguru import logger

LIVE_URL = os.environ.get("BANANAS_TEST_ES_URL", "")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "elasticsearch_live: runs against the real cluster of BANANAS_TEST_ES_URL (skipped without it)"
    )


class Cluster:
    """What a scenario needs from Elasticsearch, the stand-in's or a real one's."""

    def __init__(self, url: str, standin: StandIn | None = None) -> None:
        self.url = url
        self.standin = standin
        self.prefix = f"bananas-test-{uuid.uuid4().hex[:8]}"
        self.client = build_client({"addresses": [url]})

    def docs(self) -> list[dict[str, Any]]:
        """Every document indexed under this test's prefix, in the order the records were logged."""
        pattern = f"{self.prefix}-*"
        self.client.indices.refresh(index=pattern, allow_no_indices=True)
        found = self.client.search(index=pattern, size=10_000, query={"match_all": {}},
                                   allow_no_indices=True)["hits"]["hits"]
        return sorted((hit["_source"] for hit in found), key=lambda doc: (doc["time"], doc.get("n", 0)))

    def indices(self) -> list[str]:
        return sorted(self.client.indices.get(index=f"{self.prefix}-*", allow_no_indices=True, expand_wildcards="open"))

    def close(self) -> None:
        if self.standin is None:  # a real cluster: leave nothing behind
            self.client.options(ignore_status=404).indices.delete(index=f"{self.prefix}-*")
            self.client.options(ignore_status=404).indices.delete_index_template(name=self.prefix)
            self.client.options(ignore_status=404).ilm.delete_lifecycle(name=policy_name(self.prefix))
        self.client.close()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture(params=["standin", pytest.param("live", marks=pytest.mark.elasticsearch_live)])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if request.param == "live":
        if not LIVE_URL:
            pytest.skip("set BANANAS_TEST_ES_URL=http://localhost:9200 to run against a real cluster")
        handle = Cluster(LIVE_URL)
    else:
        server = request.getfixturevalue("standin")
        handle = Cluster(server.url, server)
    yield handle
    handle.close()


@pytest.fixture
def log() -> Iterator[Any]:
    """loguru with only the handlers a test adds; the default handler comes back afterwards."""
    logger.remove()
    yield logger
    logger.remove()
    logger.add(sys.stderr)
