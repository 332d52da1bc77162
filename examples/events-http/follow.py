#!/usr/bin/env python3
"""Follows Flatstack's canonical events over HTTP, without a broker.

Reads `GET /v1/events/stream` (server-sent events) and prints each event as one JSON
line. It remembers the last sequence it printed in a state file and resumes after it
(`Last-Event-ID`), so a restart neither repeats nor misses an event. A `410` means the
events it would resume from were pruned: it says from where it could go on, and stops.

    follow.py --api http://127.0.0.1:8080 --state follow.state [--count N] [--type T]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import requests


def events(api: str, token: str, after: int, event_type: str | None):
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after),
               "Authorization": f"Bearer {token}"}
    params = {"type": event_type} if event_type else {}
    with requests.get(f"{api}/v1/events/stream", headers=headers, params=params,
                      stream=True, timeout=(5, 60)) as response:
        if response.status_code == 410:
            error = response.json()["error"]
            raise SystemExit(f"gone: {error['message']}")
        response.raise_for_status()
        data, event_name = [], None
        for line in response.iter_lines(decode_unicode=True):
            if line == "":
                if data and event_name != "gone":
                    yield json.loads("\n".join(data))
                elif event_name == "gone":
                    raise SystemExit(f"gone: fell behind the retention: {''.join(data)}")
                data, event_name = [], None
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line.startswith("event:"):
                event_name = line[6:].strip()
            # `id:` is the event's `seq`, also in the data; `:` lines keep the stream alive.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--token", default=os.environ.get("FLATSTACK_TOKEN"),
                        help="an admin's API token (default: $FLATSTACK_TOKEN)")
    parser.add_argument("--state", help="file keeping the last sequence printed")
    parser.add_argument("--count", type=int, help="stop after this many events")
    parser.add_argument("--type", help="only this event type")
    args = parser.parse_args()
    after = 0
    if args.state and os.path.exists(args.state):
        after = int(open(args.state).read().strip() or 0)
    printed = 0
    for event in events(args.api, args.token or "", after, args.type):
        print(json.dumps(event, sort_keys=True), flush=True)
        if args.state:
            with open(args.state + ".tmp", "w") as state:
                state.write(str(event["seq"]))
            os.replace(args.state + ".tmp", args.state)
        printed += 1
        if args.count and printed >= args.count:
            return


if __name__ == "__main__":
    sys.exit(main())
