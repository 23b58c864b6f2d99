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
from urllib.parse import quote

import pytest

from mbyn.settings import Settings, get_settings
from tests.helpers.view import view_client
from tests.plugins.postgres import warehouse_fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def client(topics: Settings) -> Iterator[Any]:
    with view_client() as test_client:
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
        for path in ("/", "/api/graph", "/api/status", "/static/app.js", "/api/features", "/api/quarantine",
                     "/static/actions.js", "/api/actions/runs/replay_topic/x"):
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

    listed = client.get("/api/quarantine").json()["records"]  # what the page's re-send list shows
    assert sorted(r["topic"] for r in listed).count("orders") == 5 and all(r["id"] and r["reason"] for r in listed)
    assert {r["topic"] for r in client.get("/api/quarantine", params={"topic": "clickstream"}).json()["records"]} \
        == {"clickstream"}
    assert client.get("/api/quarantine", params={"topic": "no-such"}).status_code == 404
    assert client.get("/api/quarantine", params={"limit": 0}).status_code == 422


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


# Browsing from an offset or a time -------------------------------------------------------------------------


def test_browse_from_an_offset_or_a_time_and_hostile_params_answer_422(client: Any, topics: Settings) -> None:
    from datetime import UTC, datetime, timedelta

    before = datetime.now(UTC) - timedelta(seconds=1)
    sent = _produce(topics)
    clicks = [e["event_id"] for e in sent["clickstream"]]
    latest = client.get("/api/topics/clickstream/messages", params={"limit": 1}).json()
    partition = latest["messages"][0]["partition"]  # all five clicks share key S-click: one partition

    forward = client.get("/api/topics/clickstream/messages",
                         params={"partition": partition, "offset": 1, "limit": 2}).json()
    assert forward["mode"] == "offset" and forward["order"] == "oldest first"
    assert [m["offset"] for m in forward["messages"]] == [1, 2]
    assert [m["value"]["event_id"] for m in forward["messages"]] == clicks[1:3]
    assert forward["next"][str(partition)] == 3
    page2 = client.get("/api/topics/clickstream/messages",
                       params={"partition": partition, "offset": forward["next"][str(partition)], "limit": 10}).json()
    assert [m["value"]["event_id"] for m in page2["messages"]] == clicks[3:]
    past_end = client.get("/api/topics/clickstream/messages", params={"partition": partition, "offset": 10**15})
    assert past_end.status_code == 200 and past_end.json()["messages"] == []

    since = client.get("/api/topics/clickstream/messages",
                       params={"since": before.isoformat(), "limit": 3}).json()
    assert since["mode"] == "since" and [m["value"]["event_id"] for m in since["messages"]] == clicks[:3]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert client.get("/api/topics/clickstream/messages", params={"since": future}).json()["messages"] == []
    ancient = client.get("/api/topics/clickstream/messages", params={"since": "0001-01-01T00:00:00Z", "limit": 1})
    assert [m["value"]["event_id"] for m in ancient.json()["messages"]] == clicks[:1], ancient.text[:300]
    one_order = client.get("/api/topics/orders/messages",
                           params={"since": before.isoformat(), "key": "O-view-1"}).json()["messages"]
    assert [m["key"] for m in one_order] == ["O-view-1"]

    hostile = [({"partition": 6}, "partition"), ({"offset": 3}, "offset"), ({"since": "yesterday"}, "since"),
               ({"since": "9999-99-99"}, "since"), ({"partition": 0, "offset": -1}, "offset"),
               ({"partition": "x"}, "partition"), ({"partition": 0, "offset": 1, "since": before.isoformat()}, "since"),
               ({"limit": 0}, "limit"), ({"limit": 10**6}, "limit"), ({"offset": 2**64, "partition": 0}, "offset"),
               ({"since": "2026-01-01T00:00:00" + "0" * 100}, "since")]
    for params, named in hostile:
        response = client.get("/api/topics/orders/messages", params=params)
        assert response.status_code == 422, f"{params}: {response.status_code} {response.text[:300]}"
        assert named in json.dumps(response.json()["detail"]), f"{params}: {response.text[:300]}"
    assert client.get("/api/topics/no-such/messages", params={"partition": 0, "offset": 0}).status_code == 404

    exported = client.get("/api/topics/clickstream/export",
                          params={"format": "json", "partition": partition, "offset": 3})
    assert [m["offset"] for m in json.loads(exported.text)] == [3, 4]


def test_the_export_switch_turns_export_off(topics: Settings) -> None:
    _produce(topics)
    with view_client(lambda: topics.model_copy(update={"view_export": False})) as off:
        for fmt in ("json", "csv"):
            refused = off.get("/api/topics/orders/export", params={"format": fmt})
            assert refused.status_code == 403 and "MBYN_VIEW_EXPORT=false" in refused.json()["detail"]
        assert off.get("/api/topics/orders/messages").json()["count"] == 2, "browsing stays"
        features = off.get("/api/features")
        assert features.status_code == 200 and features.json()["export"] is False, features.text[:500]
    from mbyn.settings import load_settings

    assert load_settings(view_export="false").view_export is False


# Actions: Airflow's own permission check, not overridden ----------------------------------------------------

ACTION_DAG_FILES = ("quarantine_resend", "topic_test_message", "replay_topic")


@pytest.fixture
def airflow_api(topics: Settings, airflow_db: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The view's real app with NO dependency overridden, Airflow's SimpleAuthManager set up in this process and
    the action DAGs in the test's Airflow database; yields ``call(method, path, user, **kw)`` (user admin,
    viewer or None for anonymous, sent as a bearer token the auth manager signed)."""
    import secrets

    from airflow.api_fastapi.app import create_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient

    from mbyn.pipeline_view.app import create_app
    from tests.plugins.airflow import DAGS_FOLDER

    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(24))
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER",
                       "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    bundle = next(b for b in manager.get_all_dag_bundles() if b.name == "dags-folder")
    for dag_id in ACTION_DAG_FILES:
        bag = BundleDagBag(dag_folder=DAGS_FOLDER / f"{dag_id}.py", bundle_path=DAGS_FOLDER, bundle_name=bundle.name)
        assert dag_id in bag.dags, bag.import_errors
        sync_bag_to_db(bag, bundle.name, None)
    auth = create_auth_manager()
    tokens = {role: auth.generate_jwt(SimpleAuthManagerUser(username=role, role=role)) for role in ("admin", "viewer")}
    client = TestClient(create_app(get_settings), raise_server_exceptions=False)

    def call(method: str, path: str, user: str | None, **kw: Any) -> Any:
        headers = {**({"Authorization": f"Bearer {tokens[user]}"} if user else {}), **kw.pop("headers", {})}
        return client.request(method, path, headers=headers, **kw)

    try:
        yield call
    finally:
        client.close()
        purge_cached_app()


def _runs(dag_id: str) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [(r.run_id, r.state, r.conf, r.triggering_user_name, str(r.triggered_by))
                for r in session.scalars(select(DagRun).where(DagRun.dag_id == dag_id))]


def test_actions_are_allowed_by_airflow_roles_and_become_dag_runs(airflow_api: Any, topics: Settings) -> None:
    from datetime import UTC, datetime, timedelta

    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    good = {"quarantine-resend": {"ids": [1, 2]}, "test-message": {"topic": "orders", "count": 2},
            "rewind": {"topic": "orders", "group": "warehouse-loader", "from_ts": past, "dry_run": True}}
    before = {dag: len(_runs(dag)) for dag in ACTION_DAG_FILES}

    for action, body in good.items():
        anonymous = airflow_api("POST", f"/api/actions/{action}", None, json=body)
        assert anonymous.status_code == 401, f"{action}: {anonymous.status_code} {anonymous.text[:300]}"
        viewer = airflow_api("POST", f"/api/actions/{action}", "viewer", json=body)
        assert viewer.status_code == 403, f"{action}: {viewer.status_code} {viewer.text[:300]}"
        assert viewer.json()["detail"].startswith("your role cannot trigger this")
    assert {dag: len(_runs(dag)) for dag in ACTION_DAG_FILES} == before, "a refused request triggered a run"
    features = airflow_api("GET", "/api/features", "viewer").json()
    assert [a["may_trigger"] for a in features["actions"]] == [False, False, False]
    assert all(a["loaded"] for a in features["actions"]) and features["export"] is True
    assert "orders" in features["test_message_topics"]
    assert [a["may_trigger"] for a in airflow_api("GET", "/api/features", "admin").json()["actions"]] == [True] * 3

    triggered = {}
    for action, body in good.items():
        response = airflow_api("POST", f"/api/actions/{action}", "admin", json=body)
        assert response.status_code == 200, f"{action}: {response.status_code} {response.text[:500]}"
        triggered[action] = doc = response.json()
        assert doc["state"] == "queued" and doc["url"] == f"dags/{doc['dag_id']}/runs/{quote(doc['run_id'], safe='')}"
    runs = {dag: {r[0]: r for r in _runs(dag)} for dag in ACTION_DAG_FILES}
    resend = runs["quarantine_resend"][triggered["quarantine-resend"]["run_id"]]
    assert resend[2] == {"ids": [1, 2]} and resend[3] == "admin" and resend[4].endswith("UI")
    assert runs["topic_test_message"][triggered["test-message"]["run_id"]][2] == {"topic": "orders", "count": 2}
    rewind = runs["replay_topic"][triggered["rewind"]["run_id"]][2]
    assert rewind["dry_run"] is True and rewind["group"] == "warehouse-loader" and rewind["from_ts"] == past

    doc = triggered["rewind"]
    state = airflow_api("GET", f"/api/actions/runs/replay_topic/{quote(doc['run_id'], safe='')}", "viewer")
    assert state.status_code == 200 and state.json()["state"] == "queued" and state.json()["results"] == {}
    assert airflow_api("GET", "/api/actions/runs/replay_topic/no-such-run", "admin").status_code == 404
    assert airflow_api("GET", "/api/actions/runs/sales_report_daily/x", "admin").status_code == 404
    assert airflow_api("GET", f"/api/actions/runs/replay_topic/{doc['run_id']}", None).status_code == 401


#: (action, body, the field a 422 must name) — nothing may be triggered for any of them.
HOSTILE_ACTIONS: list[tuple[str, Any, str]] = [
    ("quarantine-resend", {"ids": []}, "ids"),
    ("quarantine-resend", {"ids": ["1; DROP TABLE quarantine"]}, "ids"),
    ("quarantine-resend", {"ids": [10**12]}, "ids"),
    ("quarantine-resend", {"ids": [True]}, "ids"),
    ("quarantine-resend", {"ids": list(range(1, 10_002))}, "ids"),
    ("quarantine-resend", {"ids": "1,2"}, "ids"),
    ("quarantine-resend", {"ids": [1], "sql": "x"}, "sql"),
    ("quarantine-resend", [1, 2], "body"),
    ("test-message", {"topic": "payments", "count": 1}, "topic"),
    ("test-message", {"topic": "no-such-topic", "count": 1}, "topic"),
    ("test-message", {"topic": "orders", "count": 10**9}, "count"),
    ("test-message", {"topic": "orders", "count": 0}, "count"),
    ("test-message", {"topic": "orders", "count": "many"}, "count"),
    ("rewind", {"topic": "orders", "group": "warehouse-loader", "from_ts": "yesterday"}, "from_ts"),
    ("rewind", {"topic": "orders", "group": "warehouse-loader", "from_ts": "2999-01-01T00:00:00Z"}, "from_ts"),
    ("rewind", {"topic": "orders", "group": "loader; rm -rf /", "from_ts": "2026-01-01T00:00:00Z"}, "group"),
    ("rewind", {"topic": "../etc", "group": "warehouse-loader", "from_ts": "2026-01-01T00:00:00Z"}, "topic"),
    ("rewind", {"topic": "orders", "from_ts": "2026-01-01T00:00:00Z"}, "group"),
]


def test_hostile_action_requests_answer_422_naming_the_field_and_trigger_nothing(airflow_api: Any) -> None:
    before = {dag: len(_runs(dag)) for dag in ACTION_DAG_FILES}
    for action, body, named in HOSTILE_ACTIONS:
        response = airflow_api("POST", f"/api/actions/{action}", "admin", json=body)
        assert response.status_code == 422, f"{action} {body!r:.80}: {response.status_code} {response.text[:300]}"
        assert named in json.dumps(response.json()["detail"]), f"{action} {body!r:.80}: {response.text[:300]}"
    not_json = airflow_api("POST", "/api/actions/test-message", "admin", content=b"\xff{",
                           headers={"Content-Type": "application/json"})
    assert not_json.status_code in (400, 422), not_json.text[:300]
    assert {dag: len(_runs(dag)) for dag in ACTION_DAG_FILES} == before, "a refused request triggered a run"


warehouse = warehouse_fixture()


def test_quarantine_list_on_sqlite_and_postgres(client: Any, warehouse: Settings) -> None:
    """The re-send list: not-yet-re-sent records newest first, the key and value as text, on both backends."""
    from datetime import UTC, datetime

    from mbyn.warehouse import init_schema, warehouse_engine
    from mbyn.warehouse.schema import quarantine

    engine = warehouse_engine(warehouse)
    now = datetime.now(UTC)
    rows = [{"topic": warehouse.topic_prefix + "orders", "partition": 2, "offset": 7, "key": b"O-1\xff",
             "value": b"{bad", "value_text": "{bad", "reason": "not_json", "consumer_group": "g", "quarantined_at": now,
             "replayed_at": None},
            {"topic": warehouse.topic_prefix + "payments", "partition": 0, "offset": 1, "key": None, "value": b"x",
             "value_text": "x" * 1000, "reason": "contract", "consumer_group": "g", "quarantined_at": now,
             "replayed_at": now}]
    try:
        init_schema(engine)
        with engine.begin() as conn:
            conn.execute(quarantine.insert(), rows)
    finally:
        engine.dispose()
    waiting = client.get("/api/quarantine").json()["records"]
    assert [(r["topic"], r["partition"], r["offset"], r["key"], r["value"]) for r in waiting] == \
        [("orders", 2, 7, "O-1\ufffd", "{bad")]
    both = client.get("/api/quarantine", params={"include_replayed": "true"}).json()["records"]
    assert [r["topic"] for r in both] == ["payments", "orders"] and len(both[0]["value"]) == 300
    assert both[0]["replayed_at"] is not None and both[1]["replayed_at"] is None
