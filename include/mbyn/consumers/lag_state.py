"""What a consumer group's lag means: ok, lagging, held (by design) or stuck — the rule in one function.

Lag in records alone cannot tell a join holding records (the fraud-detector's window) from a consumer that
stopped. The lag monitor's rows (``mbyn.consumers.lag_monitor.sample_lag``, one per partition) say more:
``lag`` (end − committed), ``held`` (records of that lag the group has already read but keeps behind its
commit by design — from the oldest one its state still needs up to how far it read, as its commit metadata
says; a restart re-reads them), ``lag_seconds`` (how long the next unread record has waited) and the live ``members``.
``summarise`` adds them up per group; ``stalled_for`` measures, over a group's history, how long records
have waited while its read position did not move; ``group_state`` turns both into one word and a reason:

* **ok** — nothing waits, or what waits is younger than the group's lag objective (``Worker.lag_objective_s``,
  else ``OK_SECONDS``) and the group is reading;
* **held** — nothing waits: the whole lag is records the group holds by design (``Worker.holds`` says why);
* **lagging** — records wait longer than the objective (or for an unknown time), and the group is reading;
* **stuck** — records wait and no member is live, or the read position has not moved for ``STUCK_AFTER_S``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["ok", "lagging", "held", "stuck"]
STATES: tuple[State, ...] = ("ok", "lagging", "held", "stuck")
#: Seconds the next unread record may wait before a group without its own lag objective counts as lagging.
OK_SECONDS = 10.0
#: Records waiting and the group's read position unchanged this long (over the history): stuck.
STUCK_AFTER_S = 30.0


@dataclass(frozen=True)
class GroupLag:
    """One group's lag at one moment, summed over its partitions."""

    group: str
    lag: int  # records behind the committed offsets (end − committed)
    held: int  # of those, read but held by design
    lag_seconds: float | None  # the oldest wait of a next unread record; 0.0 nothing waits; None unknown
    members: int  # live members
    position: int  # sum of the offsets read up to (committed + held): moves while the group reads
    partitions: int

    @property
    def waiting(self) -> int:
        """Records not read yet."""
        return max(0, self.lag - self.held)


def summarise(rows: Iterable[Mapping[str, Any]]) -> dict[str, GroupLag]:
    """Per group, the sum of ``sample_lag``-shaped rows (missing ``held`` / ``members`` count as 0, a missing
    ``lag_seconds`` as unknown); ``lag_seconds`` is the largest known one, None when every waiting partition's
    is unknown."""
    acc: dict[str, dict[str, Any]] = {}
    for row in rows:
        group = str(row["consumer_group"])
        lag, held = int(row.get("lag") or 0), int(row.get("held") or 0)
        a = acc.setdefault(group, {"lag": 0, "held": 0, "seconds": [], "unknown": False, "members": 0,
                                   "position": 0, "partitions": 0})
        a["lag"] += lag
        a["held"] += held
        a["position"] += int(row.get("end_offset") or 0) - lag + held
        a["members"] = max(a["members"], int(row.get("members") or 0))
        a["partitions"] += 1
        seconds = row.get("lag_seconds")
        if seconds is not None:
            a["seconds"].append(float(seconds))
        elif lag > held:
            a["unknown"] = True
    return {g: GroupLag(g, a["lag"], a["held"], max(a["seconds"]) if a["seconds"] else (None if a["unknown"] else 0.0),
                        a["members"], a["position"], a["partitions"]) for g, a in acc.items()}


def stalled_for(history: Sequence[tuple[float, GroupLag]]) -> float | None:
    """Seconds (up to the newest sample) that records have waited while the read position stayed where it is
    — at least: it may have stood still before the history starts.

    ``history``: (time, GroupLag) of one group, oldest first. 0.0 when nothing waits now or the position just
    moved; None without history. Used with ``group_state``.
    """
    if not history:
        return None
    newest_at, newest = history[-1]
    since = newest_at
    for at, sample in reversed(history):
        if sample.position != newest.position or sample.waiting == 0:
            break
        since = at
    return newest_at - since


def group_state(now: GroupLag, stalled_s: float | None = None,
                objective_s: float | None = None) -> tuple[State, str]:
    """(state, why) of a group now. ``stalled_s``: ``stalled_for`` over its history (None: unknown);
    ``objective_s``: the group's lag objective in seconds (None: ``OK_SECONDS``)."""
    waiting, limit = now.waiting, OK_SECONDS if objective_s is None else objective_s
    if waiting == 0:
        if now.held > 0:
            return "held", f"{now.held} record(s) read but held back from the commit by design; none waiting"
        return "ok", "caught up"
    if now.members == 0:
        return "stuck", f"{waiting} record(s) waiting and no live member"
    if stalled_s is not None and stalled_s >= STUCK_AFTER_S:
        return "stuck", f"{waiting} record(s) waiting and the read position has not moved for {stalled_s:.0f} s"
    if now.lag_seconds is None:
        return "lagging", f"{waiting} record(s) waiting (how long unknown)"
    behind = f"{waiting} record(s) waiting, the oldest {now.lag_seconds:.1f} s"
    if now.lag_seconds > limit:
        return "lagging", f"{behind} (over {limit:g} s)"
    return "ok", behind
