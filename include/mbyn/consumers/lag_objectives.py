"""Lag objectives: a consumer group over its objective raises a lag alert on ``ops-alerts``; back under, clears it.

Each worker declares how far behind its groups may fall (``Worker.lag_objective_s`` in ``mbyn.workers``:
warehouse-loader 30 s, the fraud-detector above its join window, ...). ``mbyn consume lag-monitor
--objective S`` replaces every objective with S seconds, for every group of the prefix, declared or not (a
demo, a test). A group without an objective is never alerted on (Airflow's hourly batch group, for one).

**The rule** (``breach``), judged every lag-monitor round on that round's samples, is the pipeline view's
``mbyn.consumers.lag_state.group_state`` — the same word everywhere. A group breaches when it is

* **stuck**: records wait (lag less the records it holds by design) and no member is live, whatever its
  objective — nobody will read them; or
* **lagging** by a known wait: the oldest record it has not read (``lag_seconds``, the largest over its
  partitions) has waited longer than its objective. An unknown wait alone raises nothing.

A group holding records by design (the fraud-detector's join window) with nothing waiting is "held", not a
breach. A group missing from the samples (deleted, its offsets expired) does not breach.

**Transitions, not rounds.** ``LagObjectives.evaluate`` raises an alert after ``rounds`` consecutive breaching
rounds (default 2) and clears it after ``rounds`` consecutive rounds without one — each alert is sent once when
raised and once when cleared, never every round, and one slow round neither raises nor clears. The caller
confirms a transition (``confirm``) once its alert is on the topic: one that could not be sent is offered again the
next round. The open alerts are kept in ``var/state/lag-alerts-<prefix>.json``, so a restarted lag-monitor neither
raises an open incident twice nor forgets to clear it (a file it cannot read is logged and started afresh).

``LagAlerts`` is the lag-monitor's side: the evaluation, the live members of a group whose alert changes state
(``describe_consumer_groups``: their names go into the alert) and the ``lag_alert`` envelopes (key: the group;
one partition, so in order) that the lag incident DAG (``dags/lag_incident_report.py``) picks up by itself.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaException

from mbyn.consumers.lag_state import GroupLag, group_state, summarise
from mbyn.contracts.envelope import make_envelope
from mbyn.errors import ContractError, MbynError
from mbyn.files import atomic_write_json
from mbyn.kafka.inspect import group_members
from mbyn.kafka.producer import TopicProducer
from mbyn.options import Option, option
from mbyn.settings import Settings
from mbyn.workers import WORKERS

log = logging.getLogger("mbyn.lag")

#: The catalog topic lag alerts go to, and their envelope event type.
TOPIC = "ops-alerts"
EVENT_TYPE = "lag_alert"
SOURCE = "lag-monitor"
#: Consecutive rounds over (under) the objective before an alert is raised (cleared).
DEFAULT_ROUNDS = 2
#: The catalog's bounds on what an alert carries (include/topics.yaml, topic ops-alerts).
MAX_MEMBERS = 100
MAX_TEXT = 300
MAX_SECONDS = 1e9
MAX_LAG = 2**63 - 1

OPTIONS: tuple[Option, ...] = (
    option("--objective", type=float, default=None, metavar="SECONDS",
           help="lag objective of EVERY group of the prefix, declared or not (default: each worker's "
                "lag_objective_s in mbyn.workers)"),
    option("--alert-rounds", type=int, default=DEFAULT_ROUNDS, metavar="N",
           help=f"rounds over (under) the objective before a lag alert is raised (cleared) (default {DEFAULT_ROUNDS})"),
)


def check_options(objective: float | None, rounds: int) -> None:
    """SystemExit naming the option when ``--objective`` / ``--alert-rounds`` is out of range."""
    if objective is not None and not (math.isfinite(objective) and 0 <= objective <= MAX_SECONDS):
        raise SystemExit(f"mbyn: --objective must be 0..{MAX_SECONDS:.0f} seconds, got {objective}")
    if not 1 <= rounds <= 1000:
        raise SystemExit(f"mbyn: --alert-rounds must be 1..1000, got {rounds}")


@dataclass(frozen=True)
class OpenAlert:
    """A raised alert not cleared yet."""

    alert_id: str
    raised_at: str
    objective_s: float


@dataclass(frozen=True)
class Transition:
    """A group's alert changing state: what ``LagAlerts`` sends as one ``lag_alert`` envelope."""

    state: Literal["raised", "cleared"]
    alert: OpenAlert
    lag: GroupLag
    reason: str

    def payload(self, members: Iterable[str] = ()) -> dict[str, Any]:
        """The envelope payload (the catalog's ``ops-alerts`` schema); ``members``: the live members' names."""
        seconds = self.lag.lag_seconds
        return {"alert_id": self.alert.alert_id, "state": self.state, "group": self.lag.group[:249],
                "lag": min(self.lag.lag, MAX_LAG), "seconds": None if seconds is None else min(seconds, MAX_SECONDS),
                "objective_s": self.alert.objective_s,
                "members": [m[:MAX_TEXT] for m in list(members)[:MAX_MEMBERS]], "reason": self.reason[:500],
                "raised_at": self.alert.raised_at}


def objectives(prefix: str) -> dict[str, float]:
    """Group id (with ``prefix``) → lag objective in seconds, from the worker registry."""
    return {prefix + g: float(w.lag_objective_s) for w in WORKERS.values() if w.lag_objective_s is not None
            for g in w.groups}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def clean(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """``sample_lag`` rows fit for ``lag_state.summarise``: a row that is not a mapping or names no group is
    dropped; a count that is not an integer ≥ 0 counts 0, seconds that are not a finite number ≥ 0 as unknown."""
    out = []
    for row in rows:
        group = row.get("consumer_group") if isinstance(row, Mapping) else None
        if isinstance(group, str) and group:
            out.append({"consumer_group": group, "lag_seconds": _seconds(row.get("lag_seconds")),
                        **{k: _count(row.get(k)) for k in ("lag", "held", "members", "end_offset")}})
    return out


def breach(lag: GroupLag, objective_s: float) -> str:
    """Why ``lag`` breaches ``objective_s`` (a sentence), or "" when it does not.

    ``lag_state.group_state`` decides (the pipeline view shows the same word): **stuck** (records wait and no
    member is live) breaches whatever the objective; **lagging** breaches when the wait is known to be over
    the objective — an unknown wait alone raises nothing.
    """
    state, why = group_state(lag, None, objective_s)
    if state == "stuck" or (state == "lagging" and lag.lag_seconds is not None):
        return why
    return ""


def _describe(lag: GroupLag) -> str:
    seconds = "how long unknown" if lag.lag_seconds is None else f"the oldest {lag.lag_seconds:.0f} s"
    return f"{lag.waiting} record(s) waiting, {seconds}, {lag.members} live member(s)"


@dataclass
class LagObjectives:
    """Raise after ``rounds`` breaching rounds, clear after ``rounds`` good ones; once per transition.

    ``objectives``: group → seconds; ``default``: the objective of every other group (None: not judged).
    ``open_alerts``: alerts raised before (``load_open``).
    """

    objectives: Mapping[str, float]
    rounds: int = DEFAULT_ROUNDS
    default: float | None = None
    open_alerts: dict[str, OpenAlert] = field(default_factory=dict)
    _over: dict[str, int] = field(default_factory=dict, init=False)
    _under: dict[str, int] = field(default_factory=dict, init=False)

    def objective(self, group: str) -> float | None:
        return self.objectives.get(group, self.default)

    def evaluate(self, groups: Mapping[str, GroupLag], now: datetime | None = None) -> list[Transition]:
        """This round's transitions (not yet applied: ``confirm`` each one sent)."""
        stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
        out = []
        for group in sorted(set(groups) | set(self.open_alerts)):
            opened = self.open_alerts.get(group)
            objective = self.objective(group)
            if objective is None:
                if opened is None:
                    continue
                objective = opened.objective_s  # no longer declared: judged by the objective it was raised on
            lag = groups.get(group) or GroupLag(group, 0, 0, 0.0, 0, 0, 0)
            reason = breach(lag, objective)
            if reason:
                self._over[group], self._under[group] = self._over.get(group, 0) + 1, 0
            else:
                self._under[group], self._over[group] = self._under.get(group, 0) + 1, 0
            if opened is None and reason and self._over[group] >= self.rounds:
                out.append(Transition("raised", OpenAlert(str(uuid.uuid4()), stamp, objective), lag,
                                      f"{reason} for {self._over[group]} rounds"))
            elif opened is not None and not reason and self._under[group] >= self.rounds:
                out.append(Transition("cleared", opened, lag, f"back under its objective: {_describe(lag)}"))
        return out

    def confirm(self, transition: Transition) -> None:
        """Apply a transition whose alert is on the topic."""
        if transition.state == "raised":
            self.open_alerts[transition.lag.group] = transition.alert
        else:
            self.open_alerts.pop(transition.lag.group, None)


def state_path(settings: Settings) -> Path:
    """Where the open alerts of this prefix are kept."""
    return settings.state_dir / f"lag-alerts-{settings.topic_prefix or 'default'}.json"


def load_open(path: Path) -> dict[str, OpenAlert]:
    """The open alerts saved at ``path``; {} when there is none. A file that is not what ``save_open`` writes, or
    an entry of it, is logged and left out (its group is judged afresh)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: open lag alerts not readable, starting with none: %s", path, exc)
        return {}
    found = {}
    for group, entry in (document.items() if isinstance(document, dict) else [("(file)", document)]):
        try:
            alert = OpenAlert(entry["alert_id"], entry["raised_at"], float(entry["objective_s"]))
            if not (isinstance(alert.alert_id, str) and 0 < len(alert.alert_id) <= 64
                    and isinstance(alert.raised_at, str)
                    and math.isfinite(alert.objective_s) and 0 <= alert.objective_s <= MAX_SECONDS):
                raise ValueError("out of range")
        except (TypeError, KeyError, ValueError) as exc:
            log.warning("%s: open lag alert of %r left out: %s", path, group, exc)
            continue
        found[group] = alert
    return found


def save_open(path: Path, alerts: Mapping[str, OpenAlert]) -> None:
    atomic_write_json(path, {g: asdict(a) for g, a in alerts.items()}, indent=1, sort_keys=True)


def live_members(admin: Any, group_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Per group: ``client_id member_id host`` of each live member (sorted); none for an unknown group."""
    return {g: tuple(sorted(f"{m.client_id} {m.member_id} {m.host}" for m in group_members(admin, g)))
            for g in sorted(set(group_ids))}


class LagAlerts:
    """The lag-monitor's alerts: ``observe(rows, admin)`` once per round sends the transitions to ``ops-alerts``."""

    def __init__(self, settings: Settings, *, objective: float | None = None, rounds: int = DEFAULT_ROUNDS,
                 producer: TopicProducer | None = None) -> None:
        self.path = state_path(settings)
        self.objectives = LagObjectives({} if objective is not None else objectives(settings.topic_prefix),
                                        rounds=rounds, default=objective, open_alerts=load_open(self.path))
        self._settings = settings
        self._producer = producer
        self.sent: list[dict[str, Any]] = []

    def observe(self, rows: Iterable[Mapping[str, Any]], admin: Any) -> list[dict[str, Any]]:
        """Judge one round's samples; send and return the payloads of its transitions.

        A broker that does not answer (members, delivery) is logged and the round's alerts skipped: the samples
        are written already, and an unsent transition comes again next round.
        """
        try:
            return self._observe(list(rows), admin)
        except (KafkaException, MbynError) as exc:
            log.warning("%s: lag alerts skipped this round: %s", SOURCE, exc)
            return []

    def _observe(self, rows: list[Mapping[str, Any]], admin: Any) -> list[dict[str, Any]]:
        sent = []
        for transition in self.objectives.evaluate(summarise(clean(rows))):
            members = live_members(admin, [transition.lag.group])[transition.lag.group]
            payload = transition.payload(members)
            producer = self._producer = self._producer or TopicProducer(SOURCE, self._settings)
            if not producer.send(TOPIC, make_envelope(EVENT_TYPE, payload, SOURCE), key=payload["group"]):
                raise ContractError(f"{SOURCE}: lag alert refused by the {TOPIC} contract: "
                                    f"{producer.counters.invalid_reasons[-1:]}")
            producer.flush_or_raise(30.0)
            self.objectives.confirm(transition)
            save_open(self.path, self.objectives.open_alerts)
            log.warning("%s: lag alert %s for %s: %s", SOURCE, transition.state, payload["group"], transition.reason)
            sent.append(payload)
        self.sent += sent
        return sent

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
