"""The pipeline view's JSON API (FastAPI TestClient) against the real broker and warehouse.

The app is the real one; only Airflow's login dependency is overridden, because no Airflow API server
(and so no auth manager) runs in-process here. That the dependency is really there is checked twice: the
app without the override refuses an anonymous request, and ``tests/e2e/test_pipeline_view_browser.py``
gets a 401 from a real ``airflow standalone``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mbyn.settings import Settings, get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def client(topics: Settings) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from mbyn.pipeline_view.app import create_app

    app = create_app(get_settings)
    app.dependency_overrides[app.state.login_required] = lambda: None
    with TestClient(app) as test_client:
        yield test_client


def _produce(settings: Settings) -> dict[str, Any]:
    """A few known records: two orders with a header to search for, clicks from the generator's shape."""
    from mbyn.contracts.envelope import make_envelope
    from mbyn.kafka.producer import TopicProducer

    producer = TopicProducer("view-test-source", settings)
    sent = {"orders": [], "clickstream": []}
    for i in range(2):
        payload = {"order_id": f"O-view-{i}", "customer_id": "C000001", "session_id": f"S-{i}", "country": "DE",
                   "currency": "EUR", "amount": 10.0 + i,
                   "items": [{"sku": "SKU-00001", "category": "books", "quantity": 1, "unit_price": 10.0 + i}]}
        env = dict(make_envelope("order_placed", payload, "view-test-source"))
        assert producer.send("orders", env, key=payload["order_id"], headers={"campaign": f"c{i}"})
        sent["orders"].append(env)
    for i in range(5):
        payload = {"session_id": "S-click", "customer_id": "C000002", "page": f"/p/{i}", "country": "FR",
                   "device": "mobile"}
        env = dict(make_envelope("page_view", payload, "view-test-source"))
        assert producer.send("clickstream", env, key="S-click")
        sent["clickstream"].append(env)
    producer.flush_or_raise()
    producer.close()
    return sent


def test_without_login_override_the_app_refuses_anonymous_requests(topics: Settings) -> None:
    from fastapi.testclient import TestClient

    from mbyn.pipeline_view.app import create_app

    with TestClient(create_app(get_settings), raise_server_exceptions=False) as anonymous:
        for path in ("/", "/api/graph", "/api/status", "/static/app.js"):
            response = anonymous.get(path)
            assert response.status_code in (401, 403), f"{path} answered {response.status_code} without a login"


def test_graph_and_groups_show_producers_topics_groups_and_rates(client: Any, topics: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mbyn.consumers.runtime import run_consumer
    from mbyn.consumers.warehouse_loader import WarehouseLoader

    first = client.get("/api/graph")
    assert first.status_code == 200, first.text
    graph = first.json()
    assert {t["name"] for t in graph["topics"]} >= {"orders", "clickstream", "dead-letters", "payments"}
    assert {p["name"] for p in graph["producers"]} >= {"clickstream", "payments", "shipments"}
    assert all(t["rate"] is None for t in graph["topics"]), "no rate before a second sample"

    time.sleep(1.0)
    _produce(topics)
    run_consumer(WarehouseLoader(topics), topics, idle_exit=3)
    from mbyn.pipeline_view import data

    monkeypatch.setattr(data, "SOURCES_TTL_S", 0.0)  # the first call cached the (empty) source headers
    graph = client.get("/api/graph").json()
    nodes = {n["id"]: n for n in graph["producers"] + graph["topics"] + graph["groups"]}
    edges = {(e["from"], e["to"]) for e in graph["edges"]}
    assert nodes["topic:orders"]["end"] == 2 and nodes["topic:orders"]["rate"] > 0
    assert nodes["topic:clickstream"]["rate"] > 0
    assert ("producer:view-test-source", "topic:orders") in edges, "producer from the source header"
    assert ("producer:view-test-source", "topic:clickstream") in edges
    assert nodes["producer:view-test-source"]["registered"] is False
    loader = f"group:{topics.topic_prefix}warehouse-loader"
    assert ("topic:orders", loader) in edges and ("topic:clickstream", loader) in edges
    assert nodes[loader]["lag"] == 0 and nodes[loader]["rate"] > 0

    groups = client.get("/api/groups", params={"minutes": 5}).json()
    by_group = {g["group"]: g for g in groups["groups"]}
    entry = by_group[topics.topic_prefix + "warehouse-loader"]
    assert entry["lag"] == 0 and entry["member_count"] == 0
    assert {p["stored"] for p in entry["partitions"] if p["topic"].endswith("-orders") and p["end"]} >= {1}
    assert len(entry["history"]) >= 2, "lag history from the sampler's memory"
    assert groups["history_from"] == "memory"


def test_topic_detail_messages_search_and_export(client: Any, topics: Settings) -> None:
    sent = _produce(topics)

    detail = client.get("/api/topics/orders").json()
    assert detail["physical"] == topics.topic_prefix + "orders" and len(detail["partitions"]) == 6
    assert detail["end"] == 2 and detail["key"] == "order_id"
    assert client.get("/api/topics/no-such-topic").status_code == 404

    latest = client.get("/api/topics/clickstream/messages", params={"limit": 3}).json()
    assert latest["count"] == 3
    assert {m["value"]["event_id"] for m in latest["messages"]} <= {e["event_id"] for e in sent["clickstream"]}
    assert all(m["key"] == "S-click" and m["headers"]["source"] == "view-test-source" for m in latest["messages"])

    by_key = client.get("/api/topics/orders/messages", params={"key": "O-view-1"}).json()
    assert [m["value"]["payload"]["order_id"] for m in by_key["messages"]] == ["O-view-1"]
    by_header = client.get("/api/topics/orders/messages", params={"header": "campaign:c0"}).json()
    assert [m["key"] for m in by_header["messages"]] == ["O-view-0"]
    assert client.get("/api/topics/orders/messages", params={"key": "nope"}).json()["messages"] == []

    exported = client.get("/api/topics/orders/export", params={"format": "json"})
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    assert sorted(m["key"] for m in json.loads(exported.text)) == ["O-view-0", "O-view-1"]
    as_csv = client.get("/api/topics/orders/export", params={"format": "csv", "header": "campaign:c1"})
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["key"] for r in rows] == ["O-view-1"]
    assert json.loads(rows[0]["value"])["payload"]["amount"] == 11.0
    assert client.get("/api/topics/orders/export", params={"format": "xml"}).status_code == 422


def test_status_reports_and_page(client: Any, topics: Settings) -> None:
    _produce(topics)
    status = client.get("/api/status").json()
    assert status["schema"] == "mbyn.status/1" and status["balanced"] is False and status["verdict"] == "lagging"
    assert status["reconciliation"]["topics"]["orders"]["pending"] == 2

    report = topics.reports_dir / "incidents" / "A-1.html"
    report.parent.mkdir(parents=True)
    report.write_text("<h1>incident A-1</h1>")
    listed = client.get("/api/reports").json()
    assert [r["path"] for r in listed["reports"]] == ["incidents/A-1.html"]
    served = client.get("/" + listed["reports"][0]["url"])
    assert served.status_code == 200 and "incident A-1" in served.text
    assert client.get("/reports/../../etc/passwd").status_code == 404

    page = client.get("/")
    assert page.status_code == 200 and 'src="static/app.js"' in page.text
    assert "http" not in page.text.replace("http-equiv", ""), "the page must not load anything remote"
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


#: Raw records nothing may choke on: (topic, key, value, headers).
HOSTILE: list[tuple[str, bytes | None, bytes | None, list[tuple[str, str | bytes | None]] | None]] = [
    ("orders", b"O-bad-1", b"not json at all", None),
    ("orders", b"O-bad-2", b"[" * 100_000 + b"]" * 100_000, None),
    ("orders", b"O-bad-3", b'{"schema_version": 1, "amount": NaN}', None),
    ("orders", b"O-bad-4", b'{"schema_version": 1, "event_id": "\\ud800"}', [("note", b"\xff\xfe")]),
    ("orders", None, b'{"schema_version": 1}', None),
    ("clickstream", b"\xff\xfe", b"\xff\xfe\x00 binary", [("dlq.offset", b"-1"), ("dlq.topic", b"\xc3")]),
    ("dead-letters", None, b"[" * 100_000, [("dlq.partition", b"x"), ("dlq.consumer_group", b"\xff")]),
]


def test_hostile_records_never_break_status_or_the_view(client: Any, topics: Settings) -> None:
    from confluent_kafka import Producer

    from mbyn.consumers.dead_letters import DeadLetterSink
    from mbyn.consumers.runtime import run_consumer
    from mbyn.consumers.warehouse_loader import WarehouseLoader

    producer = Producer({"bootstrap.servers": topics.bootstrap()})
    for topic, key, value, headers in HOSTILE:
        producer.produce(topics.topic_prefix + topic, value=value, key=key, headers=headers)
    assert producer.flush(30) == 0
    # Not here: a header NAME that is not UTF-8 (kcat -H). confluent-kafka raises SystemError on headers() for
    # it and the process later dies of memory corruption — see the report on issue #12.

    for path in ("/api/status", "/api/graph", "/api/groups", "/api/workers", "/api/topics/orders/messages",
                 "/api/topics/clickstream/messages", "/api/topics/dead-letters/messages",
                 "/api/topics/orders/export?format=csv"):
        response = client.get(path, params={"limit": 50} if "messages" in path else None)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:500]}"
    shown = client.get("/api/topics/orders/messages", params={"limit": 50}).json()["messages"]
    assert len(shown) == 5 and {m["value_encoding"] for m in shown} == {"text", "json"}
    assert client.get("/api/status").json()["verdict"] == "lagging"

    run_consumer(WarehouseLoader(topics), topics, idle_exit=3)
    run_consumer(DeadLetterSink(topics), topics, idle_exit=3)
    from mbyn.status import collect_status

    doc = collect_status(topics)
    assert doc["verdict"] == "balanced", doc["problems"]
    assert doc["reconciliation"]["topics"]["orders"]["quarantined"] == 5
    assert doc["reconciliation"]["topics"]["clickstream"]["quarantined"] == 1


def test_a_crash_looping_worker_is_shown_in_the_view(client: Any, topics: Settings) -> None:
    from tests.integration.test_status import crash_looping_worker

    with crash_looping_worker(topics):
        workers = client.get("/api/workers").json()
        assert workers["crash_looping"] == ["warehouse-loader#0"]
        assert workers["copies"][0]["last_error"] == "RuntimeError: cannot reach the warehouse"
        status = client.get("/api/status").json()
        assert status["workers"]["copies"][0]["state"] == "crash-looping"
        graph = client.get("/api/graph").json()
        loader = next(g for g in graph["groups"] if g["name"] == "warehouse-loader")
        assert loader["crash_looping"] == ["warehouse-loader#0"]
