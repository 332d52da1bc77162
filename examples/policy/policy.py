#!/usr/bin/env python3
"""A remote veto: refuses to create VMs whose names break a naming rule.

A service outside the node, in another language, taking part in the VM create flow as an
implementor of the extension point `vm.create.pre-check`. Everything goes over RabbitMQ:
it registers itself through the API over the broker (the `flatstack.api` queue), then
answers each call on its own queue. Its queue is exclusive, so it goes away with the
service: the node then sees it as absent at once and applies its failure policy. It
removes its registration when it stops (SIGTERM or Ctrl-C).

    policy.py --rule '[a-z][a-z0-9-]{0,62}' --failure-policy fail
"""

from __future__ import annotations

import argparse
import os
import json
import re
import signal
import uuid

import pika

POINT = "vm.create.pre-check"


class Api:
    """Flatstack's API over the broker: a request on `flatstack.api`, its reply on ours."""

    def __init__(self, channel, token: str) -> None:
        self.channel = channel
        self.token = token
        self.replies = channel.queue_declare("", exclusive=True).method.queue
        self.answers: dict[str, dict] = {}
        channel.basic_consume(self.replies, self._on_reply, auto_ack=True)

    def _on_reply(self, _channel, _method, properties, body) -> None:
        self.answers[properties.correlation_id] = json.loads(body)

    def call(self, method: str, path: str, body=None) -> tuple[int, object]:
        request_id = str(uuid.uuid4())
        request = {"method": method, "path": path,
                   "headers": {"authorization": f"Bearer {self.token}"}}
        if body is not None:
            request["body"] = body
        self.channel.basic_publish(
            "", "flatstack.api", json.dumps(request),
            pika.BasicProperties(reply_to=self.replies, correlation_id=request_id,
                                 content_type="application/json"),
            mandatory=True,
        )
        deadline = 30
        while request_id not in self.answers and deadline > 0:
            self.channel.connection.process_data_events(time_limit=0.1)
            deadline -= 0.1
        answer = self.answers.pop(request_id)
        return answer["status"], answer["body"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--rule", default="[a-z][a-z0-9-]{0,62}", help="a VM name must match it whole")
    parser.add_argument("--name", default="naming-policy", help="its registration's name")
    parser.add_argument("--token", default=os.environ.get("FLATSTACK_TOKEN"),
                        help="an admin's API token (default: $FLATSTACK_TOKEN)")
    parser.add_argument("--timeout-ms", type=int, default=2000)
    parser.add_argument("--failure-policy", choices=["fail", "ignore"], default="fail")
    args = parser.parse_args()
    rule = re.compile(args.rule)

    connection = pika.BlockingConnection(pika.URLParameters(args.amqp))
    channel = connection.channel()
    calls = channel.queue_declare("", exclusive=True).method.queue
    if not args.token:
        raise SystemExit("an admin's API token is needed: --token or FLATSTACK_TOKEN")
    api = Api(channel, args.token)
    path = f"/v1/extension-points/{POINT}/remote-implementors"
    api.call("DELETE", f"{path}/{args.name}")  # a registration left by an earlier run
    status, body = api.call("POST", path, {
        "name": args.name, "queue": calls, "timeout_ms": args.timeout_ms,
        "failure_policy": args.failure_policy,
    })
    if status != 201:
        raise SystemExit(f"registration refused ({status}): {body}")
    print(f"policy: registered as {args.name} on {POINT}, queue {calls}", flush=True)

    def on_call(ch, method, properties, body) -> None:
        call = json.loads(body)
        name = call["input"]["name"]
        if rule.fullmatch(name):
            answer = {"allow": True}
        else:
            answer = {"allow": False, "reason": f"VM names must match {args.rule}: {name!r} does not"}
        ch.basic_publish("", properties.reply_to, json.dumps(answer),
                         pika.BasicProperties(correlation_id=properties.correlation_id,
                                              content_type="application/json"))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(calls, on_call)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    while not stopping:
        connection.process_data_events(time_limit=0.2)
    status, _ = api.call("DELETE", f"{path}/{args.name}")
    print(f"policy: unregistered ({status})", flush=True)
    connection.close()


if __name__ == "__main__":
    main()
