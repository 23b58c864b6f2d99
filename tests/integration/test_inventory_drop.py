"""The inventory file drop: real files in the landing folder, the real broker, files moved on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from mbyn.contracts.envelope import validate
from mbyn.settings import Settings
from mbyn.sources import shop
from mbyn.sources.inventory_drop import inbox, publish_inventory_files
from tests.helpers.kafka import read_all
from tests.helpers.processes import reaped, stop

pytestmark = pytest.mark.integration

HEADER = "sku,category,quantity,unit_price,location,updated_at\n"


def csv_row(n: int, quantity: int = 5, location: str = "FRA-1") -> str:
    sku = shop.sku(n)
    return f"{sku},{shop.category_of(sku)},{quantity},{shop.price_eur(sku)},{location},2026-11-25T10:00:00Z\n"


def drop(settings: Settings, name: str, content: str | bytes, *, age_s: float = 60.0) -> Path:
    """Write a file into the inbox, its modification time ``age_s`` in the past (a finished upload)."""
    folder = inbox(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def topic_records(settings: Settings, expect: int | None = None):
    """Everything on the test's inventory topic; retries while a just-created topic has no leader yet."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return read_all(settings.bootstrap(), settings.topic_prefix + "inventory", expect=expect, timeout=20)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_good_csv_and_jsonl_are_published_then_moved_to_done(topics):
    drop(topics, "north.csv", HEADER + "".join(csv_row(n, quantity=n) for n in range(1, 6)))
    lines = [{"sku": shop.sku(n), "category": shop.category_of(shop.sku(n)), "quantity": 0, "unit_price": 9.5,
              "location": "AMS-2", "updated_at": "2026-11-25T11:00:00+01:00"} for n in (100, 200, 300)]
    drop(topics, "south.jsonl", "".join(json.dumps(r) + "\n" for r in lines))

    summary = publish_inventory_files(topics)
    assert summary["files_published"] == 2 and summary["records"] == 8
    folder = inbox(topics)
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["north.csv", "south.jsonl"]
    assert not (folder / "north.csv").exists() and not (folder / "south.jsonl").exists()
    got = topic_records(topics, expect=8)
    assert sorted(r.key.decode() for r in got) == sorted([shop.sku(n) for n in range(1, 6)] + [shop.sku(100),
                                                          shop.sku(200), shop.sku(300)])
    for r in got:
        validate("inventory", r.json())
    by_sku = {r.key.decode(): r.json()["payload"] for r in got}
    assert by_sku[shop.sku(3)]["quantity"] == 3
    assert by_sku[shop.sku(200)]["updated_at"] == "2026-11-25T10:00:00.000Z", "normalised to UTC"


def test_a_bad_row_sends_the_whole_file_to_error_with_reasons(topics):
    content = (HEADER + csv_row(1) + "SKU-99999,toys,1,1.0,FRA-1,2026-11-25T10:00:00Z\n" + csv_row(2)
               + f"{shop.sku(3)},{shop.category_of(shop.sku(3))},-4,1.0,FRA-1,2026-11-25T10:00:00Z\n")
    drop(topics, "bad.csv", content)
    summary = publish_inventory_files(topics)
    assert summary["files_refused"] == 1 and summary["records"] == 0
    error = inbox(topics) / "error"
    assert (error / "bad.csv").read_text() == content, "the file is moved unchanged"
    reason = (error / "bad.csv.reason.txt").read_text()
    assert "line 3: sku 'SKU-99999' is not in the catalog" in reason
    assert "line 5: quantity '-4' must be a whole number" in reason
    assert "line 2" not in reason and "line 4" not in reason
    assert topic_records(topics) == []


def test_same_content_is_not_published_twice_even_after_a_restart(topics):
    content = HEADER + csv_row(7) + csv_row(8)
    drop(topics, "monday.csv", content)
    assert publish_inventory_files(topics)["records"] == 2
    assert (topics.state_dir / "inventory.json").exists()

    drop(topics, "monday-again.csv", content)
    second = publish_inventory_files(topics)
    assert second["records"] == 0 and second["files_duplicate"] == 1
    note = (inbox(topics) / "done" / "monday-again.csv.duplicate.txt").read_text()
    assert "same content" in note and "monday.csv" in note

    # a new process (restart) still remembers the hash; same name as the first file this time
    drop(topics, "monday.csv", content)
    env = {**os.environ, "MBYN_LANDING_MIN_AGE_S": "0"}
    result = subprocess.run([sys.executable, "-m", "mbyn.cli", "produce", "inventory"], capture_output=True,
                            text=True, timeout=120, check=False, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["records"] == 0 and summary["files_duplicate"] == 1
    done = sorted(p.name for p in (inbox(topics) / "done").iterdir() if not p.name.endswith(".txt"))
    assert len(done) == 3 and "monday.csv" in done, "a second monday.csv gets a unique name in done/"
    assert len(topic_records(topics, expect=2)) == 2


def test_partial_and_too_new_files_are_left_alone(topics):
    drop(topics, "upload.csv.part", HEADER + csv_row(1))
    drop(topics, "upload.csv.tmp", HEADER + csv_row(1))
    drop(topics, ".hidden.csv", HEADER + csv_row(1))
    drop(topics, "fresh.csv", HEADER + csv_row(1), age_s=0)  # younger than the 2 s minimum age
    summary = publish_inventory_files(topics)
    assert summary["records"] == 0 and summary["files_not_ready"] == 1
    assert sorted(p.name for p in inbox(topics).iterdir()) == [".hidden.csv", "fresh.csv", "upload.csv.part",
                                                               "upload.csv.tmp"]
    assert topic_records(topics) == []


def test_symlinks_and_non_utf8_files_are_refused_with_a_reason(topics, tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text(HEADER + csv_row(1))
    folder = inbox(topics)
    folder.mkdir(parents=True)
    (folder / "link.csv").symlink_to(outside)
    drop(topics, "latin1.csv", (HEADER + csv_row(2).replace("FRA-1", "Düsseldorf")).encode("latin-1"))

    summary = publish_inventory_files(topics)
    assert summary["files_refused"] == 2 and summary["records"] == 0
    error = folder / "error"
    assert (error / "link.csv").is_symlink(), "the link itself is moved, its target is never read"
    assert outside.read_text() == HEADER + csv_row(1)
    assert "symbolic link" in (error / "link.csv.reason.txt").read_text()
    assert "not UTF-8" in (error / "latin1.csv.reason.txt").read_text()
    assert topic_records(topics) == []


def test_demo_file_from_the_cli_is_published(topics):
    env = {**os.environ, "MBYN_LANDING_MIN_AGE_S": "0"}
    result = subprocess.run([sys.executable, "-m", "mbyn.cli", "produce", "inventory", "--make-demo-file",
                             "--rows", "25", "--format", "jsonl"], capture_output=True, text=True, timeout=120,
                            check=False, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["files_published"] == 1 and summary["records"] == 25
    got = topic_records(topics, expect=25)
    assert len(got) == 25
    for r in got:
        payload = r.json()["payload"]
        assert payload["category"] == shop.category_of(payload["sku"])


def test_watch_keeps_polling_until_ctrl_c(topics):
    env = {**os.environ, "MBYN_LANDING_MIN_AGE_S": "0"}
    drop(topics, "first.csv", HEADER + csv_row(11))
    proc = subprocess.Popen([sys.executable, "-m", "mbyn.cli", "produce", "inventory", "--watch", "--interval", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with reaped(proc):
        deadline = time.monotonic() + 60
        while not (inbox(topics) / "done" / "first.csv").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "first file not picked up"
            time.sleep(0.2)
        drop(topics, "second.csv", HEADER + csv_row(12) + csv_row(13))  # arrives while it watches
        while not (inbox(topics) / "done" / "second.csv").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "second file not picked up"
            time.sleep(0.2)
        out, err = stop(proc, signal.SIGINT, timeout=30)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped_by"] == "SIGINT" and summary["files_published"] == 2 and summary["passes"] >= 2
    assert len(topic_records(topics, expect=3)) == 3
