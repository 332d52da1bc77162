"""The integration examples, run as their users would, against a real node on the demo
data centre with the API and events over the real RabbitMQ."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

import pika
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
AMQP = os.environ.get("FLATSTACK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PYTHON = sys.executable
# Every request carries the node's admin token (set once the node has written it).
http = requests.Session()


def start_node(binary: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    node = subprocess.Popen(
        [binary, "serve", "--demo", "--data-dir", data_dir, "--listen", "127.0.0.1:0",
         "--amqp-url", AMQP],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = node.stdout.readline()
    found = re.search(r"listening on (http://\S+)", line)
    if not found:
        node.kill()
        raise RuntimeError(f"the node did not start: {line!r}")
    api = found.group(1)
    # The node wrote its admin token before printing its address; the examples run as
    # subprocesses find it in FLATSTACK_TOKEN.
    with open(os.path.join(data_dir, "admin.token")) as f:
        token = f.read().strip()
    http.headers["Authorization"] = f"Bearer {token}"
    os.environ["FLATSTACK_TOKEN"] = token
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the demo is complete once its offering exists
        if http.get(f"{api}/v1/instance-offerings").json()["total"] > 0:
            return node, api
        time.sleep(0.1)
    raise RuntimeError("the demo data centre was not created")


def first(api: str, kind: str) -> str:
    return http.get(f"{api}/v1/{kind}").json()["inventories"][0]["uuid"]


def create_vm(api: str, name: str) -> requests.Response:
    body = {"name": name, "instance_offering_uuid": first(api, "instance-offerings"),
            "image_uuid": first(api, "images"), "l3_network_uuids": [first(api, "l3-networks")]}
    return http.post(f"{api}/v1/vm-instances?wait=20", json=body)


def vm_action(api: str, vm: str, action: str) -> None:
    response = http.post(f"{api}/v1/vm-instances/{vm}/actions?wait=20", json={"action": action})
    assert response.status_code == 200, response.text


def events_http(api: str, work: str) -> None:
    follow = [PYTHON, os.path.join(HERE, "events-http", "follow.py"), "--api", api,
              "--state", os.path.join(work, "follow.state")]
    first_three = subprocess.run(follow + ["--count", "3"], capture_output=True, text=True,
                                 timeout=60, check=True).stdout.splitlines()
    next_two = subprocess.run(follow + ["--count", "2"], capture_output=True, text=True,
                              timeout=60, check=True).stdout.splitlines()
    seqs = [json.loads(line)["seq"] for line in first_three + next_two]
    log = [e["seq"] for e in http.get(f"{api}/v1/events?limit=5").json()["events"]]
    assert seqs == log, f"resumed without a repeat or a gap: {seqs} vs {log}"
    print("events-http: followed, stopped, resumed: ok")


def policy(api: str) -> None:
    service = subprocess.Popen([PYTHON, os.path.join(HERE, "policy", "policy.py"), "--amqp", AMQP,
                                "--rule", "[a-z][a-z0-9-]{0,62}"],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = service.stdout.readline()
        assert "registered" in line, line
        listed = http.get(f"{api}/v1/extension-points/vm.create.pre-check/remote-implementors").json()
        assert listed["total"] == 1, listed
        vms = http.get(f"{api}/v1/vm-instances").json()["total"]
        refused = create_vm(api, "Bad_Name")
        assert refused.status_code == 422, refused.text
        assert "Bad_Name" in refused.json()["error"]["message"], refused.text
        assert http.get(f"{api}/v1/vm-instances").json()["total"] == vms, "nothing created"
        allowed = create_vm(api, "good-name")
        assert allowed.status_code == 201, allowed.text
    finally:
        service.terminate()
        service.wait(timeout=30)
    listed = http.get(f"{api}/v1/extension-points/vm.create.pre-check/remote-implementors").json()
    assert listed["total"] == 0, f"it unregistered when it stopped: {listed}"
    assert create_vm(api, "Any_Name_Now").status_code == 201
    print("policy: refused a bad name, allowed a good one, unregistered: ok")


def billing(api: str, work: str) -> None:
    queue, replay_queue = f"billing-{uuid.uuid4()}", f"billing-replay-{uuid.uuid4()}"
    db, replay_db = os.path.join(work, "billing.db"), os.path.join(work, "replay.db")
    script = os.path.join(HERE, "billing", "billing.py")

    def consume(queue: str, db: str, idle: float) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, script, "consume", "--amqp", AMQP, "--queue", queue,
                               "--db", db, "--idle-exit", str(idle), "--verbose"],
                              capture_output=True, text=True, timeout=120, check=True)

    # Both queues exist before the VMs: they hold every VM event from now on.
    consume(queue, db, 0.5)
    consume(replay_queue, replay_db, 0.5)
    one = create_vm(api, "bill-one").json()["inventory"]["uuid"]
    two = create_vm(api, "bill-two").json()["inventory"]["uuid"]
    time.sleep(1.0)
    vm_action(api, one, "stop")
    # Billing runs, then is down while more happens: it catches up when back.
    consume(queue, db, 1.0)
    vm_action(api, one, "start")
    time.sleep(0.5)
    http.delete(f"{api}/v1/vm-instances/{one}?wait=20").raise_for_status()
    vm_action(api, two, "stop")
    # A redelivered event (as after a crash before its ack) changes nothing.
    events = http.get(f"{api}/v1/events?kind=vm-instances&limit=1000").json()["events"]
    started = next(e for e in events if e["subject"] == one and e["type"].endswith("state-changed.v1")
                   and e["data"]["to"] == "Running")
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    connection.channel().basic_publish("", queue, json.dumps(started))
    connection.close()
    caught_up = consume(queue, db, 1.5).stdout
    assert f"repeat  {started['seq']}" in caught_up, caught_up
    consume(replay_queue, replay_db, 1.5)

    prices = os.path.join(work, "prices.json")
    with open(prices, "w") as f:
        json.dump({"*": 3600.0}, f)  # one per second: cost = running seconds

    def report(db: str) -> dict[str, dict]:
        out = subprocess.run([PYTHON, script, "report", "--db", db, "--prices", prices],
                             capture_output=True, text=True, check=True).stdout
        return {line["vm"]: line for line in json.loads(out)}

    bill, replay = report(db), report(replay_db)
    for vm in (one, two):
        assert bill[vm]["running_seconds"] == replay[vm]["running_seconds"], (bill[vm], replay[vm])
        assert abs(bill[vm]["cost"] - bill[vm]["running_seconds"]) < 1e-3, bill[vm]
    # `one` ran about a second, then about half a second; `two` about a second and a half.
    assert 1.2 < bill[one]["running_seconds"] < 10, bill[one]
    assert bill[one]["destroyed"]
    assert 1.0 < bill[two]["running_seconds"] < 10, bill[two]
    channel = pika.BlockingConnection(pika.URLParameters(AMQP)).channel()
    channel.queue_delete(queue)
    channel.queue_delete(replay_queue)
    print("billing: running time and cost per VM, caught up after being down, "
          "a repeat dropped by sequence: ok")


def main() -> None:
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as work:
        node, api = start_node(binary, os.path.join(work, "data"))
        try:
            events_http(api, work)
            policy(api)
            billing(api, work)
        finally:
            node.terminate()
            node.wait(timeout=60)


if __name__ == "__main__":
    main()
