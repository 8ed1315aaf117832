"""The Elasticsearch tier with the real client: what arrives (the flat model, daily indices, gzip ndjson with the
compatible media type), flushing by size and by interval, per-document failures, and the circuit breaker while the
cluster is away, rejecting or hanging. ``cluster`` scenarios also run on a real cluster (``elasticsearch_live``)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from bananas_elasticsearch import build_client, elasticsearch_sink
from bananas_elasticsearch.breaker import CircuitBreaker
from bananas_elasticsearch.cli import install
from bananas_elasticsearch.testing import Gate, filter_path
from bananas_elasticsearch.tier import FILTER_PATH, EsTier

from bananas.plugin_api import CONTEXT_FIELDS, FIXED_FIELDS, json_line

MODEL = set(FIXED_FIELDS) | set(CONTEXT_FIELDS)


class Fallback:
    """Collects what the tier writes instead of indexing (stderr in production)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()  # set once a call waits at the closed gate

    def __call__(self, lines: list[str]) -> None:
        if not self.gate.is_set():
            self.held.set()
        self.gate.wait(30)
        self.lines.extend(lines)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def notes(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["msg"].startswith("elasticsearch log tier:")]

    def logged(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if not r["msg"].startswith("elasticsearch log tier:")]


def make_tier(url: str, prefix: str, fallback: Fallback, **kwargs: Any) -> EsTier:
    kwargs.setdefault("flush_interval", 0.1)
    kwargs.setdefault("flush_bytes", 1 << 20)
    kwargs.setdefault("breaker", CircuitBreaker(first=0.2, longest=0.5))
    kwargs.setdefault("retry_backoff", 0.05)
    return EsTier(build_client({"addresses": [url]}, request_timeout=kwargs.pop("request_timeout", 10.0)),
                  index_prefix=prefix, fallback=fallback, **kwargs)


def attach(log, tier: EsTier, level: str = "DEBUG") -> None:
    log.add(tier.sink, level=level, format="{message}", colorize=False, catch=True)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- scenarios on the stand-in and on a real cluster ---------------------------------------------------------------


def test_records_arrive_as_flat_documents_in_daily_indices(cluster, log):
    fallback = Fallback()
    tier = make_tier(cluster.url, cluster.prefix, fallback)
    attach(log, tier)
    for n in range(50):
        log.bind(component="worker", job_id=f"job-{n}", job_name="send_email", queue="high", attempt=1,
                 duration_ms=1.5, n=n).info(f"job job-{n} succeeded")
    log.bind(log_source="bananas_job", job_id="job-x", n=50).error("from a handler")
    tier.close()

    docs = cluster.docs()
    assert [d["job_id"] for d in docs] == [f"job-{n}" for n in range(50)] + ["job-x"]
    assert all(list(d)[:5] == list(FIXED_FIELDS) and set(d) <= MODEL | {"n"} for d in docs)
    assert docs[0]["job_name"] == "send_email" and docs[0]["duration_ms"] == 1.5 and docs[0]["attempt"] == 1
    assert docs[-1]["log_source"] == "bananas_job" and docs[-1]["level"] == "ERROR"
    day = docs[0]["time"][:10].replace("-", ".")
    assert cluster.indices() == [f"{cluster.prefix}-{day}"]
    assert fallback.lines == [] and tier.stats()["indexed"] == 51


def test_a_rejected_document_is_reported_and_the_others_are_indexed(cluster, log):
    install(cluster.client, cluster.prefix)  # the mapping makes `attempt` an integer
    fallback = Fallback()
    tier = make_tier(cluster.url, cluster.prefix, fallback)
    attach(log, tier)
    log.bind(attempt=1, n=0).info("fine")
    log.bind(attempt="not-a-number", n=1).info("rejected by the mapping")
    log.bind(attempt=3, n=2).info("fine too")
    tier.close()

    assert [d["msg"] for d in cluster.docs()] == ["fine", "fine too"]
    notes, logged = fallback.notes(), fallback.logged()
    assert [r["msg"] for r in logged] == ["rejected by the mapping"]  # the record itself, not lost
    assert len(notes) == 1 and "status 400" in notes[0]["msg"] and notes[0]["event"] == "rejected"
    assert "attempt" in notes[0]["msg"]
    assert tier.stats()["failed"] == 1 and tier.stats()["indexed"] == 2


def test_es_init_installs_template_and_policy_idempotently(cluster):
    first = install(cluster.client, cluster.prefix)
    second = install(cluster.client, cluster.prefix)
    assert first == second == {"policy": f"{cluster.prefix}-policy", "template": cluster.prefix,
                               "index_patterns": [f"{cluster.prefix}-*"]}
    template = cluster.client.indices.get_index_template(name=cluster.prefix)["index_templates"][0]["index_template"]
    assert template["index_patterns"] == [f"{cluster.prefix}-*"]
    properties = template["template"]["mappings"]["properties"]
    assert set(MODEL) <= set(properties) and properties["time"]["type"] == "date"
    assert properties["@timestamp"] == {"type": "alias", "path": "time"}
    policy = cluster.client.ilm.get_lifecycle(name=f"{cluster.prefix}-policy")[f"{cluster.prefix}-policy"]["policy"]
    phases = policy["phases"]
    assert phases["hot"]["actions"]["rollover"] == {"max_primary_shard_size": "50gb", "max_age": "1d"}
    assert (phases["warm"]["min_age"], phases["cold"]["min_age"], phases["delete"]["min_age"]) == ("7d", "30d", "90d")


# -- the wire, flushing, retries, the breaker: stand-in only ---------------------------------------------------------


def test_bulk_goes_gzip_as_compatible_ndjson(standin, log):
    tier = make_tier(standin.url, "wire", Fallback())
    attach(log, tier)
    log.info("one")
    tier.close()
    (request,) = standin.bulk_requests()
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert request["method"] in ("PUT", "POST") and request["gzip"]
    assert headers["content-type"].replace(" ", "") in (
        "application/vnd.elasticsearch+x-ndjson;compatible-with=9",
        "application/vnd.elasticsearch+x-ndjson;compatible-with=8",
    )


def test_bulk_sends_each_records_line_as_built_and_asks_for_a_filtered_reply(standin, log):
    lines: list[str] = []
    log.add(lambda message: lines.append(json_line(message.record)), level="DEBUG")  # the JSON console, say
    tier = make_tier(standin.url, "lines", Fallback())
    attach(log, tier)
    log.bind(job_id="j1", attempt=2).info("shared")
    tier.close()
    (request,) = standin.bulk_requests()
    assert request["params"]["filter_path"] == FILTER_PATH  # statuses and errors back, not the whole reply
    assert standin.docs() == [json.loads(lines[0])] and tier.stats()["indexed"] == 1


def test_the_stand_in_filters_replies_as_elasticsearch_does():
    reply = {"errors": True, "took": 3, "items": [
        {"create": {"_index": "i", "_id": "a", "_version": 1, "status": 201, "_shards": {"total": 1}}},
        {"create": {"_index": "i", "_id": "b", "status": 400, "error": {"type": "t", "reason": "r"}}},
    ]}
    assert filter_path(reply, FILTER_PATH) == {"errors": True, "items": [
        {"create": {"status": 201}}, {"create": {"status": 400, "error": {"type": "t", "reason": "r"}}}]}
    assert filter_path(reply, "took,nothing.*") == {"took": 3}
    assert filter_path({"error": {"type": "x"}, "status": 429}, FILTER_PATH) == {"error": {"type": "x"}}


def test_flush_by_size_before_the_interval(standin, log):
    tier = make_tier(standin.url, "size", Fallback(), flush_bytes=2000, flush_interval=60)
    attach(log, tier)
    for n in range(100):
        log.info("record {n} " + "x" * 50, n=n)
    wait_for(lambda: len(standin.docs()) >= 80, what="size-triggered bulk requests")
    assert len(standin.bulk_requests()) >= 3  # several requests of ~2 kB, long before 60 s
    tier.close()
    assert len(standin.docs()) == 100


def test_flush_by_interval_when_little_is_logged(standin, log):
    tier = make_tier(standin.url, "interval", Fallback(), flush_bytes=10 << 20, flush_interval=0.3)
    attach(log, tier)
    log.info("lonely record")
    started = time.monotonic()
    wait_for(lambda: standin.docs(), what="the interval flush")
    assert time.monotonic() - started < 5
    assert [d["msg"] for d in standin.docs()] == ["lonely record"]
    tier.close()


def test_items_rejected_with_429_are_retried_not_reported(standin, log):
    fallback = Fallback()
    tier = make_tier(standin.url, "retry", fallback)
    attach(log, tier)
    standin.reject_items(None, (429, "es_rejected_execution_exception", "queue full"), None)
    for n in range(3):
        log.info("r{n}", n=n)
    tier.close()
    assert sorted(d["msg"] for d in standin.docs()) == ["r0", "r1", "r2"]
    assert fallback.lines == [] and tier.stats()["failed"] == 0
    assert len(standin.bulk_requests()) == 2  # the batch, then the retry of the one item


def test_a_sent_again_batch_is_not_indexed_twice(standin):
    fallback = Fallback()
    tier = make_tier(standin.url, "twice", fallback)
    batch = [("twice-2026.11.29", "doc-1", json.dumps({"time": "2026-11-29T00:00:00.000Z", "msg": "x"}))]
    tier._send(batch)
    tier._send(batch)  # e.g. after a timeout whose request had in fact been indexed
    tier.close()
    assert len(standin.docs()) == 1 and fallback.lines == [] and tier.stats()["indexed"] == 2


def test_cluster_away_breaker_opens_records_fall_back_and_indexing_resumes(cluster, log):
    gate = Gate(cluster.url).open()  # the tier talks to the cluster through a relay we can cut
    fallback = Fallback()
    tier = make_tier(gate.url, cluster.prefix, fallback, note_interval=60)
    attach(log, tier)
    try:
        log.bind(n=0).info("before")
        wait_for(lambda: cluster.docs(), what="the first record")

        gate.close()
        for n in range(20):
            log.bind(n=n).info("while away {n}", n=n)
        wait_for(lambda: len(fallback.logged()) == 20, what="the records on the fallback")
        assert tier.breaker.state in ("open", "half-open") and tier.breaker.trips == 1
        notes = fallback.notes()
        assert len(notes) == 1 and "unavailable" in notes[0]["msg"]  # one note, not one per batch

        gate.open()
        time.sleep(0.6)  # past the breaker's cool-down: the next batch probes
        log.bind(n=1).info("after")
        wait_for(lambda: [d["msg"] for d in cluster.docs()] == ["before", "after"], what="indexing to resume")
    finally:
        tier.close()
        gate.close()
    assert sorted(r["msg"] for r in fallback.logged()) == sorted(f"while away {n}" for n in range(20))
    assert any("back" in note["msg"] and note["level"] == "INFO" for note in fallback.notes())
    stats = tier.stats()
    assert (stats["indexed"], stats["fallback"], stats["dropped"], stats["breaker"]) == (2, 20, 0, "closed")


def test_the_stand_in_going_away_and_coming_back(standin, log):
    fallback = Fallback()
    tier = make_tier(standin.url, "away", fallback, note_interval=60)
    attach(log, tier)
    log.info("before")
    wait_for(lambda: standin.docs(), what="the first record")
    standin.stop()  # connection refused, on the port the client knows
    log.info("while away")
    wait_for(lambda: fallback.logged(), what="the fallback")
    standin.start()
    time.sleep(0.6)
    log.info("after")
    wait_for(lambda: [d["msg"] for d in standin.docs()] == ["before", "after"], what="indexing to resume")
    tier.close()
    assert [r["msg"] for r in fallback.logged()] == ["while away"]


def test_whole_requests_rejected_open_the_breaker(standin, log):
    fallback = Fallback()
    tier = make_tier(standin.url, "busy", fallback, max_retries=1)
    attach(log, tier)
    standin.bulk_status = 429
    log.info("rejected whole")
    wait_for(lambda: fallback.logged(), what="the fallback")
    assert tier.breaker.trips == 1
    assert "es_rejected_execution_exception: injected by the stand-in" in fallback.notes()[0]["msg"]
    standin.bulk_status = None
    time.sleep(0.6)
    log.info("accepted")
    wait_for(lambda: standin.docs(), what="the probe to succeed")
    tier.close()
    assert [r["msg"] for r in fallback.logged()] == ["rejected whole"]
    assert [d["msg"] for d in standin.docs()] == ["accepted"]


def test_a_hanging_cluster_never_slows_the_call_site(standin, log):
    fallback = Fallback()
    tier = make_tier(standin.url, "hang", fallback, num_workers=1, flush_interval=0.05, request_timeout=3.0)
    attach(log, tier)
    standin.stall.set()
    slowest = 0.0
    for n in range(300):
        started = time.perf_counter()
        log.info("during the hang {n}", n=n)
        slowest = max(slowest, time.perf_counter() - started)
        if n % 50 == 0:
            time.sleep(0.1)  # several flushes: the worker and its one queue slot fill, the rest falls back
    wait_for(lambda: fallback.logged(), what="the fallback while the only worker hangs")
    assert slowest < 1.0, f"a logging call took {slowest:.3f}s while Elasticsearch hung"
    standin.stall.clear()
    tier.close()
    indexed = {d["msg"] for d in standin.docs()}
    fell_back = {r["msg"] for r in fallback.logged()}
    assert indexed | fell_back == {f"during the hang {n}" for n in range(300)}  # each record somewhere
    assert tier.stats()["dropped"] == 0


def test_a_full_queue_drops_counts_and_reports(standin, log):
    fallback = Fallback()
    tier = make_tier(standin.url, "overflow", fallback, queue_size=20, note_interval=0)
    attach(log, tier)
    standin.stop()
    log.info("first")  # the breaker opens; the collector then blocks on the stalled fallback
    wait_for(lambda: fallback.lines, what="the first fallback")
    fallback.gate.clear()
    log.info("second")
    wait_for(fallback.held.is_set, what="the collector waiting inside the fallback")
    for n in range(100):
        log.info("burst {n}", n=n)
    assert tier.stats()["dropped"] >= 70
    fallback.gate.set()
    tier.close()
    dropped = tier.stats()["dropped"]
    reported = sum(note.get("dropped", 0) for note in fallback.notes())
    assert reported == dropped
    assert len(fallback.logged()) + dropped == 102


# -- settings → client ---------------------------------------------------------------------------------------------


def test_api_key_and_basic_auth_reach_the_server(standin):
    for options, expected in (
        ({"api_key": "a2V5OnNlY3JldA=="}, "ApiKey a2V5OnNlY3JldA=="),
        ({"username": "elastic", "password": "pw"}, "Basic ZWxhc3RpYzpwdw=="),
    ):
        client = build_client({"addresses": [standin.url], **options})
        client.info()
        client.close()
        headers = {k.lower(): v for k, v in standin.requests[-1]["headers"].items()}
        assert headers["authorization"] == expected


def test_cloud_id_configures_the_client():
    cloud_id = "bananas-prod:" + __import__("base64").b64encode(b"us-east-1.aws.found.io$abc123$kib456").decode()
    client = build_client({"cloud_id": cloud_id, "api_key": "k", "addresses": ["http://ignored:9200"]})
    (node,) = client.transport.node_pool.all()
    assert node.config.host == "abc123.us-east-1.aws.found.io" and node.config.scheme == "https"
    client.close()


def test_a_malformed_cloud_id_is_a_config_error():
    from bananas.plugin_api import ConfigError

    with pytest.raises(ConfigError, match=r"invalid logging.elasticsearch.cloud_id = 'nonsense'"):
        build_client({"cloud_id": "nonsense"})


def test_sink_factory_reads_the_tier_table(standin, log):
    config = elasticsearch_sink({"enabled": True, "addresses": [standin.url], "index_prefix": "factory",
                                 "flush_bytes": 1000, "flush_interval": 0.1, "num_workers": 3, "level": "WARNING"})
    assert config.level == "WARNING" and config.close is not None
    log.add(config.sink, level=config.level, **config.options)
    log.info("below the tier's level")
    log.warning("indexed")
    config.close()
    assert [d["msg"] for d in standin.docs("factory-*")] == ["indexed"]
    # the configured tier gzips its bodies itself (level 1, cheaper than the client's 9): still gzip on the wire
    (request,) = standin.bulk_requests()
    assert request["gzip"] and {k.lower(): v for k, v in request["headers"].items()}["content-encoding"] == "gzip"


def test_a_precompressed_client_sends_a_bytes_body_as_it_is_and_serializes_the_rest_as_before():
    import gzip

    from bananas_elasticsearch import COMPRESS_LEVEL, _PrecompressedNdjson

    body = gzip.compress(b'{"create":{"_index":"i"}}\n{"msg":"x"}\n', COMPRESS_LEVEL)
    serializer = _PrecompressedNdjson()
    assert serializer.dumps(body) == body  # the client's own would add a newline after the gzip stream
    assert serializer.dumps([{"create": {}}, {"msg": "x"}]) == b'{"create":{}}\n{"msg":"x"}\n'
    client = build_client({"addresses": ["http://127.0.0.1:9"]}, precompressed=True)
    try:
        assert client.transport.node_pool.get().config.http_compress is False
    finally:
        client.close()
