#!/usr/bin/env python3
"""Billing built only from Flatstack's canonical events, over RabbitMQ.

It consumes the VM events (`io.flatstack.vm-instances.#` on the topic exchange
`flatstack.events`) from a durable queue of its own, with manual acknowledgements, and
keeps in SQLite how long each VM has been running. Prices are per instance offering and
hour. It is idempotent by sequence: an event whose `seq` it has already applied (a
redelivery after a crash of either side) changes nothing, because the event and the new
last `seq` are written in one transaction before the message is acknowledged. While it is
down, the broker keeps its queue: it catches up when it comes back.

    billing.py consume --amqp amqp://guest:guest@127.0.0.1:5672/%2f --db billing.db
    billing.py report --db billing.db --prices prices.json   # {"<offering uuid>": 0.05, "*": 0.1}
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys

import pika

EXCHANGE = "flatstack.events"
VM_EVENTS = "io.flatstack.vm-instances.#"


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Ledger:
    """What the bill is made of: each VM's running time, and the last event applied."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY CHECK (id = 1),
                                                 last_seq INTEGER NOT NULL);
            INSERT OR IGNORE INTO progress (id, last_seq) VALUES (1, 0);
            CREATE TABLE IF NOT EXISTS vms (uuid TEXT PRIMARY KEY, name TEXT NOT NULL,
                offering TEXT NOT NULL, running_since TEXT, running_seconds REAL NOT NULL,
                destroyed INTEGER NOT NULL DEFAULT 0);
            """
        )
        self.db.commit()

    def last_seq(self) -> int:
        return self.db.execute("SELECT last_seq FROM progress").fetchone()[0]

    def apply(self, event: dict) -> bool:
        """Applies one event, once: False if it was applied before (a repeat)."""
        seq = int(event["seq"])
        with self.db:  # one transaction: the change and the new last seq
            if seq <= self.last_seq():
                return False
            self._apply(event)
            self.db.execute("UPDATE progress SET last_seq = ?", (seq,))
        return True

    def _apply(self, event: dict) -> None:
        kind = event["type"]
        data = event["data"]
        at = event["time"]
        uuid = event["subject"]
        if kind == "io.flatstack.vm-instances.created.v1":
            vm = data["inventory"]
            running = at if vm.get("state") == "Running" else None
            self.db.execute(
                "INSERT OR IGNORE INTO vms (uuid, name, offering, running_since, running_seconds)"
                " VALUES (?, ?, ?, ?, 0)",
                (uuid, vm.get("name", ""), vm.get("instance_offering_uuid", ""), running),
            )
        elif kind == "io.flatstack.vm-instances.state-changed.v1" and data.get("field") == "state":
            if data["to"] == "Running":
                self.db.execute(
                    "UPDATE vms SET running_since = ? WHERE uuid = ? AND running_since IS NULL",
                    (at, uuid),
                )
            elif data["from"] == "Running":
                self._stop_clock(uuid, at)
        elif kind == "io.flatstack.vm-instances.deleted.v1":
            self._stop_clock(uuid, at)
            self.db.execute("UPDATE vms SET destroyed = 1 WHERE uuid = ?", (uuid,))

    def _stop_clock(self, uuid: str, at: str) -> None:
        row = self.db.execute("SELECT running_since FROM vms WHERE uuid = ?", (uuid,)).fetchone()
        if row and row[0]:
            seconds = (parse_time(at) - parse_time(row[0])).total_seconds()
            self.db.execute(
                "UPDATE vms SET running_seconds = running_seconds + ?, running_since = NULL"
                " WHERE uuid = ?",
                (max(seconds, 0.0), uuid),
            )

    def report(self, prices: dict[str, float], now: dt.datetime) -> list[dict]:
        lines = []
        for uuid, name, offering, since, seconds, destroyed in self.db.execute(
            "SELECT uuid, name, offering, running_since, running_seconds, destroyed"
            " FROM vms ORDER BY name, uuid"
        ):
            if since:  # still running: up to now
                seconds += max((now - parse_time(since)).total_seconds(), 0.0)
            price = prices.get(offering, prices.get("*", 0.0))
            lines.append({
                "vm": uuid, "name": name, "offering": offering, "destroyed": bool(destroyed),
                "running_seconds": round(seconds, 3), "cost": round(seconds / 3600 * price, 6),
            })
        return lines


def consume(args: argparse.Namespace) -> None:
    ledger = Ledger(args.db)
    connection = pika.BlockingConnection(pika.URLParameters(args.amqp))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_declare(args.queue, durable=True)
    channel.queue_bind(args.queue, EXCHANGE, routing_key=VM_EVENTS)
    channel.basic_qos(prefetch_count=100)
    print(f"billing: consuming {args.queue} from seq {ledger.last_seq()}", flush=True)
    for method, _properties, body in channel.consume(args.queue, inactivity_timeout=args.idle_exit):
        if method is None:  # idle for --idle-exit seconds
            break
        event = json.loads(body)
        applied = ledger.apply(event)
        channel.basic_ack(method.delivery_tag)
        if args.verbose:
            print(("applied" if applied else "repeat ") + f" {event['seq']} {event['type']}", flush=True)
    channel.cancel()
    connection.close()


def report(args: argparse.Namespace) -> None:
    prices = json.loads(open(args.prices).read()) if args.prices else {}
    now = dt.datetime.now(dt.timezone.utc)
    json.dump(Ledger(args.db).report(prices, now), sys.stdout, indent=2)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consume", help="apply VM events from the broker")
    c.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    c.add_argument("--queue", default="billing", help="its durable queue")
    c.add_argument("--db", required=True)
    c.add_argument("--idle-exit", type=float, default=None,
                   help="stop after this many seconds without an event (default: never)")
    c.add_argument("--verbose", action="store_true")
    c.set_defaults(run=consume)
    r = sub.add_parser("report", help="each VM's running time and cost")
    r.add_argument("--db", required=True)
    r.add_argument("--prices", help="JSON: offering uuid (or \"*\") -> price per hour")
    r.set_defaults(run=report)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
