"""The same life cycle through a client *generated* from the OpenAPI document by
openapi-python-client: typed models for every body (a VLAN network's `vlan`, each action),
typed answers parsed by the generated code (an `Error` or an unparsed answer fails).

    openapi-python-client generate --path openapi.json --meta none --output-path DIR
    PYTHONPATH=DIR python3 clients/python/test_generated.py path/to/flatstack
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from node import admin_token, start_node  # noqa: E402

from flatstack_client import AuthenticatedClient  # noqa: E402  (the generated package)
from flatstack_client import models  # noqa: E402

GiB = 1 << 30


class Generated:
    def __init__(self, base: str, token: str):
        self.client = AuthenticatedClient(base_url=base, token=token, timeout=30.0,
                                          raise_on_unexpected_status=True)
        self.calls = 0

    def __call__(self, operation: str, model: str | None = None, body: dict | None = None, **params):
        """Calls `flatstack_client.api.default.<operation>` with `body` as generated `model`."""
        module = importlib.import_module(f"flatstack_client.api.default.{operation}")
        if model is not None:
            params["body"] = getattr(models, model).from_dict(body)
        if "wait" in module.sync_detailed.__code__.co_varnames:
            params.setdefault("wait", 30)
        response = module.sync_detailed(client=self.client, **params)
        self.calls += 1
        assert 200 <= response.status_code < 300, f"{operation}: {response.status_code} {response.content!r}"
        parsed = response.parsed
        if response.status_code == 204:
            return None
        assert parsed is not None and not isinstance(parsed, models.Error), f"{operation}: {response.content!r}"
        return parsed

    def made(self, operation: str, model: str, body: dict, **params) -> dict:
        """A create or action's answer: its typed inventory, as a dict."""
        answer = self(operation, model, body, **params)
        inventory = answer.inventory
        return inventory.to_dict()


def lifecycle(g: Generated) -> None:
    zone = g.made("zones_create", "CreateZone", {"name": "z1"})
    cluster = g.made("clusters_create", "CreateCluster",
                     {"name": "c1", "zone_uuid": zone["uuid"], "hypervisor_type": "Simulator"})
    host = g.made("hosts_create", "HostCreateSimulator", {
        "type": "Simulator", "name": "h1", "cluster_uuid": cluster["uuid"], "management_ip": "10.0.0.1",
        "cpu_capacity": 8, "memory_capacity": 64 * GiB})
    assert host["status"] == "Connected", host
    ps = g.made("primary_storage_create", "PrimaryStorageCreateSimulator", {
        "type": "Simulator", "name": "ps1", "zone_uuid": zone["uuid"], "url": "/sim/ps1", "total_capacity": 1024 * GiB})
    g.made("primary_storage_action", "PrimaryStorageActionsAttachCluster",
           {"action": "attach_cluster", "cluster_uuid": cluster["uuid"]}, uuid=ps["uuid"])
    bs = g.made("backup_storage_create", "BackupStorageCreateSimulator", {
        "type": "Simulator", "name": "bs1", "zone_uuid": zone["uuid"], "url": "/sim/bs1", "total_capacity": 1024 * GiB})
    image = g.made("images_create", "CreateImage", {
        "name": "cirros", "url": "http://example.invalid/c.qcow2", "format": "qcow2", "size": 1 << 25,
        "backup_storage_uuids": [bs["uuid"]]})
    offering = g.made("instance_offerings_create", "CreateInstanceOffering",
                      {"name": "small", "cpu_num": 1, "memory_size": GiB})
    l3s = []
    for model, fields, subnet in (("L2CreateL2NoVlanNetwork", {}, "10.1.0"),
                                  ("L2CreateL2VlanNetwork", {"vlan": 42}, "10.2.0")):
        l2 = g.made("l2_networks_create", model, {
            "type": model.removeprefix("L2Create"), "name": model[-20:].lower(), "zone_uuid": zone["uuid"],
            "physical_interface": "eth0", **fields})
        assert all(l2[k] == v for k, v in fields.items()), l2
        g.made("l2_networks_action", "L2NetworksActionsAttachCluster",
               {"action": "attach_cluster", "cluster_uuid": cluster["uuid"]}, uuid=l2["uuid"])
        l3 = g.made("l3_networks_create", "CreateL3Network", {"name": f"l3-{subnet}", "l2_network_uuid": l2["uuid"]})
        g.made("l3_networks_ip_ranges_create", "CreateIpRange", {
            "name": "r", "start_ip": f"{subnet}.10", "end_ip": f"{subnet}.200", "netmask": "255.255.255.0",
            "gateway": f"{subnet}.1"}, uuid=l3["uuid"])
        l3s.append(l3)
    vm = g.made("vm_instances_create", "CreateVm", {
        "name": "vm1", "instance_offering_uuid": offering["uuid"], "image_uuid": image["uuid"],
        "l3_network_uuids": [l3["uuid"] for l3 in l3s]})
    assert vm["state"] == "Running", vm
    for action, state in (("Stop", "Stopped"), ("Start", "Running"), ("Reboot", "Running")):
        after = g.made("vm_instances_action", f"VmInstancesActions{action}", {"action": action.lower()}, uuid=vm["uuid"])
        assert after["state"] == state, after
    listed = g("vm_instances_list")
    assert listed.total == 1 and listed.inventories[0].nics, listed
    g("vm_instances_delete", uuid=vm["uuid"])
    assert g("vm_instances_list").total == 0


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "flatstack")
    with tempfile.TemporaryDirectory() as data_dir:
        node, base = start_node(binary, data_dir)
        try:
            g = Generated(base, admin_token(data_dir))
            lifecycle(g)
            print(f"generated client: {g.calls} calls")
        finally:
            node.terminate()
            node.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
