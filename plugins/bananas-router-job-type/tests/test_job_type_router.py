"""The job-type router: routed types keep their priority inside their queue; workers read the right queues."""

from __future__ import annotations

import pytest
from bananas_router_job_type import JobTypeRouter, split_queue

from bananas import Bananas, Job, Priority

HIGH, NORMAL, LOW = Priority
ROUTES = {"generate_report": "cpu", "process_analytics": "cpu", "fetch_data": "io"}


@pytest.fixture
def router() -> JobTypeRouter:
    return JobTypeRouter(ROUTES)


@pytest.mark.parametrize(
    ("name", "priority", "queue"),
    [
        ("generate_report", HIGH, "cpu.high"),
        ("process_analytics", LOW, "cpu.low"),
        ("fetch_data", NORMAL, "io.normal"),
        ("send_email", HIGH, "high"),  # unrouted: the default queues, as with the priority router
        ("send_email", LOW, "low"),
    ],
)
def test_route_keeps_the_priority_inside_the_routed_queue(router, name, priority, queue):
    assert router.route(Job(name=name, priority=priority)) == queue


def test_catch_all_reads_every_queue_all_high_queues_first(router):
    assert router.queues(priorities=[LOW, HIGH, NORMAL]) == [
        "high", "cpu.high", "io.high", "normal", "cpu.normal", "io.normal", "low", "cpu.low", "io.low",
    ]


def test_priorities_filter_every_queue(router):
    assert router.queues(priorities=[HIGH]) == ["high", "cpu.high", "io.high"]


def test_job_types_select_the_queues_they_are_routed_to(router):
    assert router.queues(priorities=list(Priority), job_types=["generate_report", "process_analytics"]) == [
        "cpu.high", "cpu.normal", "cpu.low",
    ]
    assert router.queues(priorities=[HIGH, LOW], job_types=["fetch_data", "send_email"]) == [
        "io.high", "high", "io.low", "low",
    ]


@pytest.mark.parametrize(
    ("given", "priorities", "queues"),
    [
        (["cpu"], list(Priority), ["cpu.high", "cpu.normal", "cpu.low"]),
        (["cpu", "io"], list(Priority), ["cpu.high", "io.high", "cpu.normal", "io.normal", "cpu.low", "io.low"]),
        (["cpu"], [HIGH], ["cpu.high"]),
        (["cpu.low", "high"], list(Priority), ["high", "cpu.low"]),  # concrete names are read as they are
        (["low", "cpu", "low"], [NORMAL], ["cpu.normal", "low"]),
        (["elsewhere"], [HIGH, LOW], ["elsewhere.high", "elsewhere.low"]),  # a base another producer routes to
    ],
)
def test_named_queues_expand_to_their_priority_queues(router, given, priorities, queues):
    assert router.queues(priorities=priorities, queues=given) == queues


def test_split_queue():
    assert split_queue("cpu.high") == ("cpu", HIGH)
    assert split_queue("low") == (None, LOW)
    assert split_queue("cpu") == ("cpu", None)
    assert split_queue("a.b.normal") == ("a.b", NORMAL)
    assert split_queue(".high") == (".high", None)


def test_empty_routes_behave_like_the_priority_router():
    router = JobTypeRouter({})
    assert router.route(Job(name="x", priority=HIGH)) == "high"
    assert router.queues(priorities=list(Priority)) == ["high", "normal", "low"]


def test_selected_by_name_and_used_by_the_producer(tmp_path, monkeypatch):
    # Given an app configured with router = "job-type" and a [routes] table
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bananas.toml").write_text(
        'broker = "memory://router-test"\nrouter = "job-type"\n\n[routes]\ngenerate_report = "cpu"\n'
    )
    app = Bananas(env={})
    # When jobs are built / Then the routed type lands in its queue, priority kept, others by priority
    assert app.build("generate_report", {}, priority="high")[0].queue == "cpu.high"
    assert app.build("send_email", {}, priority="low")[1].queue == "low"
    assert isinstance(app.router, JobTypeRouter)
    owner = app.plugins.routers.entries["job-type"]
    assert owner.dist == "bananas-router-job-type"
