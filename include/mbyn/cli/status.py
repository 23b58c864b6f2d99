"""``mbyn status [--json] [--scan-limit N]``: ``mbyn.status.collect_status`` as text tables or one JSON document.

Exit status: 0 balanced or lagging, 4 not balanced, 5 not checked (``mbyn.reconciliation.EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from mbyn.cli.text import format_table
from mbyn.kafka.security import VIEWER
from mbyn.reconciliation import BALANCED, EXIT_CODES, LAGGING, NOT_BALANCED, NOT_CHECKED
from mbyn.settings import Settings
from mbyn.status import DEFAULT_SCAN_LIMIT, collect_status

_SHORT = {BALANCED: "ok", LAGGING: "lag", NOT_BALANCED: "NO", NOT_CHECKED: "n/c"}


def render_text(status: Mapping[str, Any]) -> str:
    """The status as compact text tables (what ``mbyn status`` prints)."""

    def num(value: Any) -> str:
        return "-" if value is None else str(value)

    out: list[str] = [f"mbyn status  {status['generated_at']}  kafka {status['bootstrap_servers']}  "
                      f"prefix {status['topic_prefix'] or '(none)'}  warehouse {status['warehouse_url']}", ""]
    rows: list[tuple[Any, ...]] = [
        (name, len(t["partitions"]) if t["exists"] else "-", t["start_sum"], t["end_sum"], t["span"],
         " ".join(str(p["end"]) for p in t["partitions"]) or "(missing)")
            for name, t in status["topics"].items()]
    out += ["TOPICS", format_table(["topic", "parts", "start", "end", "records*", "end per partition"], rows),
            "  * end − start offsets, including transaction markers", ""]
    rows = [(g, info["state"], info["member_count"], ",".join(info["client_ids"]) or "-",
             sum(1 for p in info["partitions"] if p["committed"] is not None or p["stored"] is not None),
             info["lag"]) for g, info in status["groups"].items()]
    out += ["CONSUMER GROUPS", format_table(["group", "state", "members", "client ids", "positions", "lag"], rows), ""]
    workers = status.get("workers") or {}
    if workers.get("copies"):
        rows = [(c["label"], c["state"], c["restarts"], c["recent_restarts"], num(c["last_exit_code"]),
                 c["last_error"] or "-") for c in workers["copies"]]
        out += ["WORKERS (mbyn run)", format_table(["copy", "state", "restarts", "last 5 min", "last exit",
                                                    "last error line"], rows), ""]
    wh = status["warehouse"]
    if wh["reachable"]:
        rows = [(t, n) for t, n in sorted(wh["tables"].items())]
        out += ["WAREHOUSE", format_table(["table", "rows"], rows), ""]
        if wh["quarantine"]:
            rows = [(q["topic"] or "?", q["reason"], q["consumer_group"] or "?", q["count"], q["replayed"])
                    for q in wh["quarantine"]]
            out += ["QUARANTINE", format_table(["topic", "reason", "group", "count", "replayed"], rows), ""]
    else:
        out += [f"WAREHOUSE: not reachable ({wh['error']})", ""]
    rec = status["reconciliation"]
    rows = [(t, r["table"], num(r["records"]), r["pending"], r["quarantined"], num(r["loaded"]),
             num(r["collapsed"]), num(r["expected_rows"]), num(r["rows"]), _SHORT[r["verdict"]])
            for t, r in rec["topics"].items()]
    out += [f"RECONCILIATION (group {rec['loader_group']}, counted by {rec['counted_by']})",
            format_table(["topic", "table", "records", "pending", "quarant.", "loaded", "collapsed", "expected",
                          "rows", "verdict"], rows)]
    for t, r in rec["topics"].items():
        for note in r["notes"]:
            out.append(f"  {t}: {note}")
    dl = rec["dead_letters"]
    out.append(f"  dead-letters: {num(dl['records'])} record(s), {dl['pending']} waiting for the dead-letters sink")
    out += ["", f"VERDICT: {status['verdict'].upper()} — {status['summary']}"]
    out += [f"  - {p}" for p in status["problems"]]
    for label in workers.get("crash_looping", []):
        copy = next(c for c in workers["copies"] if c["label"] == label)
        out.append(f"WORKER CRASH-LOOPING: {label} restarted {copy['recent_restarts']} times in the last "
                   f"{workers['window_s'] // 60} min; last error: {copy['last_error'] or '-'}")
    return "\n".join(out)


def _status_command(settings: Settings, args: argparse.Namespace) -> int:
    status = collect_status(settings, scan_limit=args.scan_limit)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(render_text(status))
    sys.stdout.flush()
    return EXIT_CODES[status["verdict"]]


def register(sub: Any) -> None:
    """``mbyn status [--json] [--scan-limit N]``."""
    p = sub.add_parser("status", help="topics, consumer groups, warehouse and the reconciliation verdict "
                                      "(exit 0 balanced or lagging, 4 not balanced, 5 not checked)")
    p.add_argument("--json", action="store_true", help='one JSON document ("schema": "mbyn.status/1")')
    p.add_argument("--scan-limit", type=int, default=DEFAULT_SCAN_LIMIT,
                   help="read records one by one only up to this many offsets (default %(default)s)")
    p.set_defaults(handler=_status_command, reads_pipeline=True, principal=VIEWER)
