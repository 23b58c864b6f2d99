"""Inventory file drop: CSV / JSON Lines stock files in ``var/landing/inventory`` → topic ``inventory`` (key = sku).

Warehouses drop files with columns ``sku, category, quantity, unit_price, location, updated_at``
(``.csv`` with a header row, or ``.jsonl`` / ``.ndjson`` with one JSON object per line). Each run
processes what is in the folder (``--watch``: again every ``--interval`` seconds until Ctrl-C):

* **Only complete files.** Names starting with ``.`` or ending in ``.part`` / ``.tmp`` are ignored, as
  are files modified less than ``MBYN_LANDING_MIN_AGE_S`` seconds ago (default 2) and files whose size
  or modification time changes while they are read — the next pass takes them.
* **Refused with a reason** (moved to ``error/`` with ``<name>.reason.txt`` beside it): symbolic links,
  hard-linked files and anything resolving outside the landing folder (opened with ``O_NOFOLLOW``),
  unknown extensions, files over ``MAX_FILE_BYTES``, text that is not UTF-8, and files with any bad row.
* **All-or-nothing per file.** Every row is validated against the catalog (known SKU, its category per
  ``shop.category_of``, quantity and price ranges, ISO timestamp with zone, the topic's JSON Schema);
  the reason file lists each bad row's line number and reason, and nothing of that file is published.
* **Exactly one publication per content.** A good file is sent, flushed with ``flush_or_raise``, its
  sha256 saved in ``var/state/inventory.json`` and only then moved (``os.replace``) to ``done/``. The same
  content dropped again — under any name, also after a restart — goes to ``done/`` with a
  ``<name>.duplicate.txt`` note and is not re-published. A crash between flush and save re-sends the
  file once with the same event ids (uuid5 of sku, location, updated_at).

``write_demo_file`` (``--make-demo-file``) drops a demo file the way a well-behaved uploader does
(written as ``.part``, then renamed), with shop SKUs and their categories.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mbyn.contracts.envelope import make_envelope, utc_now_iso, validate
from mbyn.errors import ContractError, SourceError
from mbyn.files import atomic_write
from mbyn.options import Args, Option, option
from mbyn.process import StopFlag
from mbyn.settings import Settings, get_settings
from mbyn.sources import shop
from mbyn.sources.batch import BatchRun, event_id, refuse_stream_limits, run_batch, run_batch_cli

log = logging.getLogger("mbyn.source.inventory")

SOURCE = "inventory-drop"
TOPIC = "inventory"
COLUMNS = ("sku", "category", "quantity", "unit_price", "location", "updated_at")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
IGNORED_SUFFIXES = (".part", ".tmp")
MAX_FILE_BYTES = 64 * 1024 * 1024
#: At most this many row errors are listed in a reason file (the count is always complete).
MAX_LISTED_ERRORS = 200
LOCATIONS = ("FRA-1", "AMS-2", "MAD-1", "WAW-1", "LHR-3")
_SKU = re.compile(r"^SKU-(\d{5})$")


def inbox(settings: Settings) -> Path:
    """The folder uploaders drop inventory files into: ``<landing_dir>/inventory``."""
    return settings.landing_dir / "inventory"


class RowError(ValueError):
    """One row of a file is not a valid stock level (the message says why)."""


class Refused(Exception):
    """A file cannot be processed at all (the message is the reason written beside it in error/)."""


@dataclass(frozen=True)
class Snapshot:
    """A file's content, read once, with the identity the state remembers."""

    path: Path
    data: bytes
    sha256: str


# Reading and validating ----------------------------------------------------------------------------------


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def read_complete(path: Path, folder: Path, min_age_s: float, now: float) -> Snapshot | None:
    """Read ``path`` if it is a complete, safe, regular file; None if it is not ready yet.

    Raises Refused for files that must never be read (links, outside the folder, wrong type, too big).
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise Refused(f"is a symbolic link (to {os.readlink(path)!r}); links are not followed")
    if not stat.S_ISREG(st.st_mode):
        raise Refused("is not a regular file")
    if path.resolve().parent != folder.resolve():
        raise Refused(f"resolves to {path.resolve()}, outside the landing folder {folder.resolve()}")
    if st.st_nlink > 1:
        raise Refused(f"has {st.st_nlink} hard links; its content may belong to a file outside the landing folder")
    if path.suffix.lower() not in FORMATS:
        raise Refused(f"unsupported file type {path.suffix or '(none)'!r}; expected one of {', '.join(FORMATS)}")
    if st.st_size > MAX_FILE_BYTES:
        raise Refused(f"is {st.st_size} bytes; at most {MAX_FILE_BYTES} are accepted")
    if now - st.st_mtime < min_age_s:
        return None  # maybe still being written
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
        after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino) \
            or len(data) != st.st_size:
        return None  # changed while we read it: not complete yet
    return Snapshot(path, data, hashlib.sha256(data).hexdigest())


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Refused(f"is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} ({exc.reason}); "
                      "save it as UTF-8 and drop it again") from None


def _rows(text: str, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, raw row) pairs; RowError for a line that is not a row at all."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""), restkey="__extra__")
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        unknown = [c for c in header if c not in COLUMNS]
        if missing or unknown:
            raise Refused(f"line 1: header must name the columns {', '.join(COLUMNS)}"
                          + (f"; missing {', '.join(missing)}" if missing else "")
                          + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        for row in reader:
            yield reader.line_num, row
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, {"__error__": f"not JSON: {exc.msg}"}
            continue
        if not isinstance(row, dict):
            yield number, {"__error__": f"expected a JSON object, got {type(row).__name__}"}
            continue
        yield number, row


def _quantity(value: Any) -> int:
    if isinstance(value, bool):
        raise RowError(f"quantity {value!r} must be a whole number >= 0")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        number = int(value)
    else:
        raise RowError(f"quantity {value!r} must be a whole number >= 0")
    if number > 10_000_000:
        raise RowError(f"quantity {number} is above 10000000")
    return number


def _price(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RowError(f"unit_price {value!r} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise RowError(f"unit_price {value!r} must be a number") from None
    if not math.isfinite(number) or not 0 <= number <= 1_000_000:
        raise RowError(f"unit_price {value!r} must be between 0 and 1000000")
    return number


def _timestamp(value: Any) -> str:
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise RowError(f"updated_at {value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise RowError(f"updated_at {value!r} has no time zone (add Z or +hh:mm)")
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stock_level(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate one raw row against the shop's catalog and return the ``inventory`` payload (RowError if bad)."""
    if "__error__" in raw:
        raise RowError(raw["__error__"])
    if raw.get("__extra__"):
        raise RowError(f"{len(COLUMNS) + len(raw['__extra__'])} fields, expected {len(COLUMNS)}")
    missing = [c for c in COLUMNS if raw.get(c) in (None, "")]
    unknown = sorted(set(raw) - set(COLUMNS) - {"__extra__"})
    if missing or unknown:
        raise RowError("; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                 + ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])))
    sku = str(raw["sku"]).strip()
    match = _SKU.match(sku)
    if not match or not 1 <= int(match.group(1)) <= shop.SKUS:
        raise RowError(f"sku {sku!r} is not in the catalog (SKU-00001 .. {shop.sku(shop.SKUS)})")
    category = str(raw["category"]).strip()
    if category != shop.category_of(sku):
        raise RowError(f"category {category!r} does not match the catalog's {shop.category_of(sku)!r} for {sku}")
    location = str(raw["location"]).strip()
    if len(location) > 64:
        raise RowError(f"location is {len(location)} characters; at most 64")
    return {"sku": sku, "category": category, "quantity": _quantity(raw["quantity"]),
            "unit_price": _price(raw["unit_price"]), "location": location, "updated_at": _timestamp(raw["updated_at"])}


def parse_stock_file(snapshot: Snapshot) -> tuple[list[dict[str, Any]], list[str]]:
    """(envelopes, row errors) for a file; Refused if the file as a whole is unusable.

    Every row is checked, so the reason file lists all bad rows at once, not just the first.
    """
    text = _decode(snapshot.data)
    fmt = FORMATS[snapshot.path.suffix.lower()]
    envelopes: list[dict[str, Any]] = []
    errors: list[str] = []
    for line, raw in _rows(text, fmt):
        try:
            payload = stock_level(raw)
            envelope = dict(make_envelope("stock_level", payload, SOURCE, event_time=payload["updated_at"],
                                          event_id=event_id(TOPIC, payload["sku"], payload["location"],
                                                            payload["updated_at"])))
            validate(TOPIC, envelope)
        except (RowError, ContractError) as exc:
            errors.append(f"line {line}: {exc}")
            continue
        envelopes.append(envelope)
    if not envelopes and not errors:
        raise Refused("has no rows")
    return envelopes, errors


# Moving files ---------------------------------------------------------------------------------------------


def _move(path: Path, folder: Path, note_suffix: str | None = None, note: str = "") -> Path:
    """Move ``path`` into ``folder`` atomically (a free name), with an optional note written first beside it."""
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    if target.exists() or target.is_symlink():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"{path.stem}.{stamp}{path.suffix}"
    if note_suffix:
        atomic_write(folder / f"{target.name}{note_suffix}", note)
    os.replace(path, target)
    return target


def _refuse(run: BatchRun, path: Path, reasons: list[str]) -> None:
    folder = path.parent / "error"
    listed = reasons[:MAX_LISTED_ERRORS]
    more = len(reasons) - len(listed)
    note = (f"{path.name} was refused at {utc_now_iso()}; nothing from it was published.\n\n"
            + "\n".join(listed) + (f"\n... and {more} more\n" if more else "\n"))
    target = _move(path, folder, ".reason.txt", note)
    run.stats["files_refused"] += 1
    log.warning("inventory: %s refused → %s (%s)", path.name, target, reasons[0] if len(reasons) == 1
                else f"{len(reasons)} problems, see {target.name}.reason.txt")


# Publishing ---------------------------------------------------------------------------------------------


def process_inbox(run: BatchRun) -> None:
    """One pass over the landing folder: publish good files, refuse bad ones, leave incomplete ones."""
    folder = inbox(run.settings)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = run.state.setdefault("files", {})
    now = time.time()
    for path in sorted(folder.iterdir()):
        if run.stop.is_set():
            return
        if _ignored(path.name) or (path.is_dir() and not path.is_symlink()):
            continue
        try:
            snapshot = read_complete(path, folder, run.settings.landing_min_age_s, now)
        except Refused as exc:
            _refuse(run, path, [f"{path.name} {exc}"])
            continue
        except FileNotFoundError:
            continue  # taken away between listing and reading
        if snapshot is None:
            run.stats["files_not_ready"] += 1
            continue
        seen = files.get(snapshot.sha256)
        if seen is not None:
            target = _move(path, folder / "done", ".duplicate.txt",
                           f"{path.name}: same content (sha256 {snapshot.sha256}) as {seen['name']}, published at "
                           f"{seen['published_at']}; not published again.\n")
            run.stats["files_duplicate"] += 1
            log.info("inventory: %s is a duplicate of %s → %s", path.name, seen["name"], target)
            continue
        try:
            envelopes, errors = parse_stock_file(snapshot)
        except Refused as exc:
            _refuse(run, path, [f"{path.name} {exc}"])
            continue
        if errors:
            _refuse(run, path, errors)
            continue
        for envelope in envelopes:
            run.send(TOPIC, envelope, envelope["payload"]["sku"], validated=True)  # type: ignore[arg-type]
        files[snapshot.sha256] = {"name": path.name, "records": len(envelopes), "published_at": utc_now_iso()}
        run.commit()  # flush_or_raise, then the hash is durable; only now may the file leave the inbox
        target = _move(path, folder / "done")
        run.stats["files_published"] += 1
        log.info("inventory: %s: %d stock levels published → %s", path.name, len(envelopes), target)


def publish_inventory_files(settings: Settings | None = None, *, watch: bool = False, interval: float = 2.0,
                            duration: float | None = None, stop: StopFlag | None = None) -> dict[str, Any]:
    """Process the inventory landing folder once (or keep polling with ``watch``); return the summary.

    This is the Airflow task entry. ``watch`` polls every ``interval`` seconds until ``stop`` is set or
    ``duration`` seconds passed. Raises DeliveryError if the broker did not acknowledge a file's records
    (the file then stays in the inbox and is published again by the next pass).
    """
    settings = settings or get_settings()
    stop = stop or StopFlag()
    deadline = time.monotonic() + duration if duration is not None else None

    def body(run: BatchRun) -> None:
        while True:
            process_inbox(run)
            run.stats["passes"] += 1
            if not watch or stop.is_set():
                return
            if deadline is not None and time.monotonic() + interval > deadline:
                stop.set("duration")
                return
            stop.wait(interval)

    return run_batch(SOURCE, TOPIC, body, settings, stop=stop)


def write_demo_file(settings: Settings | None = None, *, rows: int = 40, fmt: str = "csv",
                    seed: int | None = None) -> Path:
    """Drop a valid demo stock file into the inbox (written as ``.part``, then renamed); return its path."""
    if fmt not in ("csv", "jsonl"):
        raise SourceError(f"demo file format must be csv or jsonl, got {fmt!r}")
    settings = settings or get_settings()
    rng = random.Random(seed)
    now = utc_now_iso()
    records = []
    for _ in range(rows):
        sku = shop.sku(rng.randint(1, shop.SKUS))
        records.append({"sku": sku, "category": shop.category_of(sku), "quantity": rng.randint(0, 500),
                        "unit_price": shop.price_eur(sku), "location": rng.choice(LOCATIONS), "updated_at": now})
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        text = out.getvalue()
    else:
        text = "".join(json.dumps(r) + "\n" for r in records)
    folder = inbox(settings)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"stock-{datetime.now(UTC):%Y%m%dT%H%M%S}-{rng.getrandbits(24):06x}.{fmt}"
    atomic_write(folder / name, text)  # its temporary name is hidden, so the watcher skips it
    log.info("inventory: demo file %s with %d rows dropped", folder / name, rows)
    return folder / name


OPTIONS: tuple[Option, ...] = (
    option("--watch", action="store_true", help="keep polling the landing folder until Ctrl-C"),
    option("--interval", type=float, default=2.0, help="seconds between passes with --watch"),
    option("--make-demo-file", action="store_true",
           help="first drop a demo stock file (shop SKUs) into the landing folder"),
    option("--format", choices=("csv", "jsonl"), default="csv", help="format of --make-demo-file"),
    option("--rows", type=int, default=40, help="rows in --make-demo-file"),
)


def run(settings: Settings, args: Args) -> int:
    refuse_stream_limits("inventory", args, allowed=("duration",) if args.watch else ())
    if args.interval <= 0:
        raise SystemExit("mbyn: --interval must be positive")
    if args.make_demo_file:
        write_demo_file(settings, rows=args.rows, fmt=args.format)
    return run_batch_cli(SOURCE, lambda stop: publish_inventory_files(
        settings, watch=args.watch, interval=args.interval, duration=args.duration, stop=stop))
