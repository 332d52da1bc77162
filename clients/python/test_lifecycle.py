"""Every kind of the distribution, and a VM's whole life, through a client that knows only
the node's OpenAPI document (docclient.py): every request and every answer is
checked against the document's schemas, so a wrong schema fails this test; and every
operation of the document, every action included, is called at least once.

    python3 clients/python/test_lifecycle.py [path/to/flatstack]

Starts the node on a temporary data directory and a free port, and stops it at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docclient import ApiError, Client, SchemaError  # noqa: E402
from node import ADMIN_ACCOUNT, admin_token, start_node  # noqa: E402

GiB = 1 << 30


def inv(answer: dict) -> dict:
    return answer["inventory"]


def expect_error(status: int, fn, *args, **kwargs) -> dict:
    try:
        fn(*args, **kwargs)
    except ApiError as error:
        assert error.status == status, f"expected {status}, got {error.status}: {error.body}"
        return error.body
    raise AssertionError(f"expected {status}, the call succeeded")


def lifecycle(c: Client) -> None:
    zone = inv(c.call("zones.create", {"name": "zone-1", "description": "the first"}))
    cluster = inv(c.call("clusters.create", {"name": "c1", "zone_uuid": zone["uuid"], "hypervisor_type": "Simulator"}))
    host = inv(c.call("hosts.create", {
        "type": "Simulator", "name": "h1", "cluster_uuid": cluster["uuid"], "management_ip": "10.0.0.1",
        "cpu_capacity": 64, "memory_capacity": 256 * GiB, "latency_ms": 0,
    }))
    assert host["status"] == "Connected", host
    ps = inv(c.call("primary-storage.create", {
        "type": "Simulator", "name": "ps1", "zone_uuid": zone["uuid"], "url": "/sim/ps1", "total_capacity": 10 * 1024 * GiB,
    }))
    inv(c.call("primary-storage.action", {"action": "attach_cluster", "cluster_uuid": cluster["uuid"]}, uuid=ps["uuid"]))
    bs = inv(c.call("backup-storage.create", {
        "type": "Simulator", "name": "bs1", "zone_uuid": zone["uuid"], "url": "/sim/bs1", "total_capacity": 10 * 1024 * GiB,
    }))
    image = inv(c.call("images.create", {
        "name": "cirros", "url": "http://example.invalid/cirros.qcow2", "format": "qcow2", "size": 41126400,
        "backup_storage_uuids": [bs["uuid"]],
    }))
    offering = inv(c.call("instance-offerings.create", {"name": "small", "cpu_num": 1, "memory_size": GiB}))

    # Both L2 types; the VLAN one with its driver's own field.
    novlan = inv(c.call("l2-networks.create", {
        "type": "L2NoVlanNetwork", "name": "flat", "zone_uuid": zone["uuid"], "physical_interface": "eth0",
    }))
    vlan = inv(c.call("l2-networks.create", {
        "type": "L2VlanNetwork", "name": "vlan100", "zone_uuid": zone["uuid"], "physical_interface": "eth1", "vlan": 100,
    }))
    assert vlan["vlan"] == 100, vlan
    # The document refuses what the driver would: a VLAN network without its vlan, a NoVlan one with one.
    for bad in ({"type": "L2VlanNetwork", "name": "x", "zone_uuid": zone["uuid"], "physical_interface": "eth1"},
                {"type": "L2NoVlanNetwork", "name": "x", "zone_uuid": zone["uuid"], "physical_interface": "eth1", "vlan": 5}):
        try:
            c.call("l2-networks.create", bad)
        except SchemaError:
            pass
        else:
            raise AssertionError(f"the document accepted {bad}")
    types = c.call("l2-networks.types")
    assert {t["name"] for t in types["types"]} >= {"L2NoVlanNetwork", "L2VlanNetwork"}, types
    # The Openvswitch type (a plugin of its own): its fields, its tunnels and their resync.
    ovs = inv(c.call("l2-networks.create", {
        "type": "Openvswitch", "name": "overlay", "zone_uuid": zone["uuid"], "physical_interface": "eth2",
        "bridge": "br-tun", "tunnel_key_range": {"first": 100, "last": 199},
    }))
    assert (ovs["bridge"], ovs["tunnel_protocol"], ovs["tunnel_key"]) == ("br-tun", "gre", 100), ovs
    assert c.call("l2-networks.tunnels.list", uuid=ovs["uuid"])["total"] == 0
    resync = inv(c.call("l2-networks.action", {"action": "resync_tunnels"}, uuid=ovs["uuid"]))
    assert resync["tunnels"] == 0, resync
    c.call("l2-networks.delete", uuid=ovs["uuid"])
    l3s = []
    # Attached to the cluster: one with the action, one through its `clusters` collection.
    inv(c.call("l2-networks.action", {"action": "attach_cluster", "cluster_uuid": cluster["uuid"]}, uuid=novlan["uuid"]))
    attached = inv(c.call("l2-networks.clusters.create", {"cluster_uuid": cluster["uuid"]}, uuid=vlan["uuid"]))
    assert attached["attached_cluster_uuids"] == [cluster["uuid"]], attached
    assert c.call("l2-networks.clusters.list", uuid=vlan["uuid"])["total"] == 1
    for l2, subnet in ((novlan, "192.168.0"), (vlan, "192.168.1")):
        l3 = inv(c.call("l3-networks.create", {"name": f"l3-{l2['name']}", "l2_network_uuid": l2["uuid"]}))
        c.call("l3-networks.ip-ranges.create", {
            "name": "r1", "start_ip": f"{subnet}.10", "end_ip": f"{subnet}.250", "netmask": "255.255.255.0",
            "gateway": f"{subnet}.1",
        }, uuid=l3["uuid"])
        l3s.append(l3)
    # An IP range through its own collection too.
    inv(c.call("ip-ranges.create", {
        "name": "r2", "start_ip": "192.168.1.251", "end_ip": "192.168.1.254", "netmask": "255.255.255.0",
        "gateway": "192.168.1.1", "l3_network_uuid": l3s[1]["uuid"],
    }))
    c.call("l3-networks.ip-ranges.list", uuid=l3s[1]["uuid"])
    quota = inv(c.call("quotas.create", {
        "name": "q", "account_uuid": ADMIN_ACCOUNT, "max_vm_num": 10, "max_cpu_num": 10, "max_memory_size": 10 * GiB,
    }))

    # A VM's whole life: create on both networks, every action, destroy.
    vm = inv(c.call("vm-instances.create", {
        "name": "vm1", "instance_offering_uuid": offering["uuid"], "image_uuid": image["uuid"],
        "l3_network_uuids": [l3["uuid"] for l3 in l3s],
    }))
    assert vm["state"] == "Running", vm
    assert {n["l2_type"] for n in vm["nics"]} == {"L2NoVlanNetwork", "L2VlanNetwork"}, vm
    uuid = vm["uuid"]
    # The VM plugin's child collection on L2 networks: the NICs on the VLAN network.
    on_vlan = c.call("l2-networks.vm-nics.list", uuid=vlan["uuid"])
    assert on_vlan["total"] == 1, on_vlan
    assert on_vlan["inventories"][0]["vm_instance_uuid"] == uuid, on_vlan
    assert on_vlan["inventories"][0]["l2_type"] == "L2VlanNetwork", on_vlan
    actions = c.operations["vm-instances.action"][2]["requestBody"]["content"]["application/json"]["schema"]
    names = sorted(actions["discriminator"]["mapping"])
    assert names == ["reboot", "start", "stop"], names
    assert inv(c.call("vm-instances.action", {"action": "stop"}, uuid=uuid))["state"] == "Stopped"
    expect_error(409, c.call, "vm-instances.action", {"action": "stop"}, uuid=uuid)
    assert inv(c.call("vm-instances.action", {"action": "start"}, uuid=uuid))["state"] == "Running"
    assert inv(c.call("vm-instances.action", {"action": "reboot"}, uuid=uuid))["state"] == "Running"
    # A data volume attached to it and detached again.
    volume = inv(c.call("volumes.create", {"name": "data", "size": GiB, "primary_storage_uuid": ps["uuid"]}))
    attached = inv(c.call("volumes.action", {"action": "attach", "vm_instance_uuid": uuid}, uuid=volume["uuid"]))
    assert attached["vm_instance_uuid"] == uuid, attached
    inv(c.call("volumes.action", {"action": "detach"}, uuid=volume["uuid"]))
    c.call("volumes.update", {"description": "scratch"}, uuid=volume["uuid"])
    assert c.call("volumes.show", uuid=volume["uuid"])["inventory"]["description"] == "scratch"
    assert c.call("volumes.list")["total"] == 2  # and the VM's root volume
    c.call("volumes.delete", uuid=volume["uuid"])
    c.call("vm-instances.update", {"name": "vm1-renamed"}, uuid=uuid)
    assert inv(c.call("vm-instances.show", uuid=uuid))["name"] == "vm1-renamed"
    assert c.call("vm-instances.list", account_uuid=ADMIN_ACCOUNT)["total"] == 1
    # A point armed and disarmed again.
    fault = inv(c.call("fault-injections.create", {"point": "vm.reboot.pre-check", "mode": "fail"}))
    body = expect_error(422, c.call, "vm-instances.action", {"action": "reboot"}, uuid=uuid)
    assert body["error"]["code"] == "vetoed", body
    assert c.call("fault-injections.list")["total"] == 1
    c.call("fault-injections.show", uuid=fault["uuid"])
    expect_error(409, c.call, "fault-injections.update", {"name": "x"}, uuid=fault["uuid"])
    c.call("fault-injections.delete", uuid=fault["uuid"])
    c.call("vm-instances.delete", uuid=uuid)
    expect_error(404, c.call, "vm-instances.show", uuid=uuid)

    # Every kind is listed and shown; then the host's actions and a clean-up.
    for kind in ("zones", "clusters", "hosts", "primary-storage", "backup-storage", "images", "instance-offerings",
                 "l2-networks", "l3-networks", "ip-ranges", "quotas"):
        listed = c.call(f"{kind}.list")
        assert listed["total"] >= 1, kind
        c.call(f"{kind}.show", uuid=listed["inventories"][0]["uuid"])
    # Every other action of the distribution, once nothing uses what they change.
    inv(c.call("hosts.action", {"action": "reconnect"}, uuid=host["uuid"]))
    c.call("hosts.action", {"action": "add_tag", "tag": "ssd"}, uuid=host["uuid"])
    c.call("hosts.action", {"action": "remove_tag", "tag": "ssd"}, uuid=host["uuid"])
    for kind, target, operation in (("hosts", host, "start_vm"), ("primary-storage", ps, "create_volume")):
        c.call(f"{kind}.action", {"action": "inject_failure", "operation": operation, "delay_ms": 1}, uuid=target["uuid"])
        c.call(f"{kind}.action", {"action": "clear_failures"}, uuid=target["uuid"])
    expect_error(404, c.call, "hosts.action", {"action": "power_off_vm", "vm_uuid": uuid}, uuid=host["uuid"])
    # The simulated host's agent: the daemons it runs, and what it holds (nothing yet).
    assert inv(c.call("hosts.action", {"action": "set_daemons", "daemons": "openvswitch"},
                      uuid=host["uuid"]))["daemons"] == "openvswitch"
    inv(c.call("hosts.action", {"action": "forget_agent_state"}, uuid=host["uuid"]))
    assert c.call("hosts.agent-objects.list", uuid=host["uuid"])["total"] == 0
    for l2 in (novlan, vlan):
        detached = inv(c.call("l2-networks.action", {"action": "detach_cluster", "cluster_uuid": cluster["uuid"]},
                              uuid=l2["uuid"]))
        assert detached["attached_cluster_uuids"] == [], detached
    detached = inv(c.call("primary-storage.action", {"action": "detach_cluster", "cluster_uuid": cluster["uuid"]},
                          uuid=ps["uuid"]))
    assert detached["attached_cluster_uuids"] == [], detached
    c.call("l3-networks.action", {"action": "list_dhcp_leases"}, uuid=l3s[0]["uuid"])
    c.call("quotas.update", {"description": "alice's"}, uuid=quota["uuid"])
    c.call("quotas.delete", uuid=quota["uuid"])
    # Every action of every kind was called.
    for operation_id, (_, _, op) in c.operations.items():
        if operation_id.endswith(".action"):
            mapping = op["requestBody"]["content"]["application/json"]["schema"]["discriminator"]["mapping"]
            missed = [a for a in mapping if f"{operation_id}:{a}" not in c.checked]
            assert not missed, f"{operation_id}: {missed} not called"
    jobs = c.call("jobs.list", state="succeeded", limit=5)
    assert jobs["inventories"], jobs
    # A refusal is the error the document gives.
    expect_error(409, c.call, "zones.delete", uuid=zone["uuid"])
    # Every kind renamed, typed kinds' types listed, and everything deleted again, leaves
    # first; one of them as a job followed on /v1/jobs/{uuid}.
    assert c.call("zones.update", {"description": "renamed"}, wait=None, uuid=zone["uuid"]) is not None
    for kind in ("hosts", "primary-storage", "backup-storage"):
        assert c.call(f"{kind}.types")["types"], kind
    for l3 in l3s:
        for r in c.call("l3-networks.ip-ranges.list", uuid=l3["uuid"])["inventories"]:
            c.call("ip-ranges.update", {"name": "old"}, uuid=r["uuid"])
            c.call("ip-ranges.delete", uuid=r["uuid"])
    for kind, items in (("l3-networks", l3s), ("l2-networks", [novlan, vlan]), ("images", [image]),
                        ("backup-storage", [bs]), ("primary-storage", [ps]), ("hosts", [host]),
                        ("clusters", [cluster]), ("instance-offerings", [offering]), ("zones", [zone])):
        for item in items:
            c.call(f"{kind}.update", {"name": f"old-{item['name']}"}, uuid=item["uuid"])
            c.call(f"{kind}.delete", uuid=item["uuid"])
        assert c.call(f"{kind}.list")["total"] == 0, kind
    for introspection in ("plugins.list", "extension_points.list", "schemas.list", "openapi",
                          "health.alive", "health.ready", "version"):
        c.call(introspection)
    # The event log: everything above, in order, page by page; each type has a schema.
    first = c.call("events.list", after=0, limit=5)
    assert len(first["events"]) == 5 and first["next"] == first["events"][-1]["seq"], first
    rest = c.call("events.list", after=first["next"], limit=1000)
    seqs = [e["seq"] for e in first["events"] + rest["events"]]
    assert seqs == sorted(set(seqs)), "in order, no repeat"
    created = c.call("events.list", type="io.flatstack.zones.created.v1", limit=10)["events"]
    assert [e["subject"] for e in created] == [zone["uuid"]], created
    assert c.call("events.schema", type="io.flatstack.zones.created.v1")["type"] == "object"


def identity(c: Client) -> None:
    """Accounts, users, tokens and sessions, the permissions and the audit trail."""
    account = inv(c.call("accounts.create", {"name": "acme"}))
    c.call("accounts.update", {"description": "a customer"}, uuid=account["uuid"])
    assert c.call("accounts.show", uuid=account["uuid"])["inventory"]["description"] == "a customer"
    assert c.call("accounts.list", name="acme")["total"] == 1
    user = inv(c.call("users.create", {"name": "alice", "account_uuid": account["uuid"], "role": "member",
                                       "password": "correct horse battery"}))
    assert "password" not in user and "password_hash" not in user, user
    c.call("users.update", {"description": "first member"}, uuid=user["uuid"])
    c.call("users.show", uuid=user["uuid"])
    assert c.call("users.list", account_uuid=account["uuid"])["total"] == 1
    token = inv(c.call("tokens.create", {"name": "ci", "user_uuid": user["uuid"]}))
    assert token["token"].startswith("fst_"), token
    c.call("tokens.update", {"description": "for CI"}, uuid=token["uuid"])
    shown = c.call("tokens.show", uuid=token["uuid"])["inventory"]
    assert "token" not in shown and "token_hash" not in shown, shown
    session = inv(c.call("sessions.create", {"name": "alice", "password": "correct horse battery"}))
    assert session["user_uuid"] == user["uuid"], session
    assert c.call("tokens.list", user_uuid=user["uuid"])["total"] == 2
    # As alice: her tokens only, and no zone of her own.
    as_alice = Client(c.base, session["token"])
    assert as_alice.call("tokens.list")["total"] == 2
    expect_error(403, as_alice.call, "zones.create", {"name": "mine"})
    expect_error(401, Client(c.base).call, "zones.list")
    permissions = c.call("permissions.list")["permissions"]
    assert any(p["permission"] == "vm-instances:create" and p["roles"] == ["admin", "member"]
               for p in permissions), permissions
    c.call("tokens.delete", uuid=token["uuid"])
    c.call("users.delete", uuid=user["uuid"])
    c.call("accounts.delete", uuid=account["uuid"])
    deadline = time.monotonic() + 10
    while not any(r["path"] == "/v1/accounts" for r in c.call("audit.list", limit=1000)["inventories"]):
        assert time.monotonic() < deadline, "the account's create was not audited"
        time.sleep(0.1)


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "flatstack")
    with tempfile.TemporaryDirectory() as data_dir:
        node, base = start_node(binary, data_dir)
        try:
            started = time.monotonic()
            client = Client(base, admin_token(data_dir))
            lifecycle(client)
            identity(client)
            unused = sorted(set(client.operations) - client.checked)
            assert not unused, f"operations of the document not called: {unused}"
            print(f"python client: {len(client.checked)} operations and actions, {client.validated} schema checks, "
                  f"{time.monotonic() - started:.1f}s")
        finally:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
