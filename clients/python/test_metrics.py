"""/metrics, read as Prometheus reads it: the whole output must parse with the reference
Python parser (prometheus_client), and carry what operators monitor."""

from __future__ import annotations

import sys
import tempfile

import requests

http = requests.Session()
from prometheus_client.parser import text_string_to_metric_families

from node import admin_token, start_node


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):  # raises on anything malformed
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(found: dict, name: str, **labels) -> float:
    for sample in found.get(name, []):
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no {name} with {labels}; have {[s.labels for s in found.get(name, [])]}")


def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        node, api = start_node(sys.argv[1], data)
        http.headers["Authorization"] = f"Bearer {admin_token(data)}"
        try:
            zone = http.post(f"{api}/v1/zones?wait=10", json={"name": "z"}).json()["inventory"]["uuid"]
            cluster = http.post(f"{api}/v1/clusters?wait=10", json={
                "name": "c", "zone_uuid": zone, "hypervisor_type": "Simulator"}).json()["inventory"]["uuid"]
            host = http.post(f"{api}/v1/hosts?wait=10", json={
                "type": "Simulator", "name": "h", "cluster_uuid": cluster, "management_ip": "10.1.0.1",
                "cpu_capacity": 16, "memory_capacity": 1 << 34}).json()["inventory"]["uuid"]
            assert http.get(f"{api}/v1/zones/{'0' * 32}").status_code == 404
            response = http.get(f"{api}/metrics")
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            found = samples(response.text)
        finally:
            node.terminate()
            node.wait(timeout=30)
    assert value(found, "flatstack_http_requests_total", method="POST", route="/v1/{kind}", status="201") >= 3
    assert value(found, "flatstack_http_requests_total", method="GET", route="/v1/{kind}/{uuid}", status="404") >= 1
    assert value(found, "flatstack_http_request_duration_seconds_count", method="POST", route="/v1/{kind}") >= 3
    assert value(found, "flatstack_http_request_duration_seconds_bucket", method="POST", route="/v1/{kind}", le="+Inf") >= 3
    assert value(found, "flatstack_jobs_total", kind="zone.create", state="succeeded") == 1
    assert value(found, "flatstack_extension_calls_total", point="host.connect", implementor="l2-openvswitch", remote="false") >= 1
    assert value(found, "flatstack_host_cpu_capacity", host=host, cluster=cluster) == 16
    assert value(found, "flatstack_host_cpu_available", host=host, cluster=cluster) == 16
    assert value(found, "flatstack_events_newest_seq") >= 3
    assert value(found, "flatstack_store_commits_total") > 0
    assert "flatstack_bus_busy_lanes" in found
    assert value(found, "flatstack_bus_queued_requests") >= 0
    assert value(found, "flatstack_extension_call_seconds_count", point="host.connect",
                 implementor="l2-openvswitch", remote="false") >= 1
    assert value(found, "flatstack_extension_call_seconds_bucket", point="host.connect",
                 implementor="l2-openvswitch", remote="false", le="+Inf") >= 1
    assert value(found, "flatstack_store_transaction_seconds_count", backend="sqlite") > 0
    assert value(found, "flatstack_store_transaction_seconds_bucket", backend="sqlite", le="+Inf") > 0
    print(f"metrics: {sum(len(v) for v in found.values())} samples parsed: ok")


if __name__ == "__main__":
    main()
