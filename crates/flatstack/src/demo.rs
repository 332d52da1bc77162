//! `flatstack serve --demo`: a small simulated data centre, created through the node's own
//! API (as any client would), so a new user can create a VM at once.

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// A small client of the node's API for the commands that build a data centre through it
/// (the demo, the benchmark).
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client of the node at `base` sending `token` (the admin token of a node started
    /// beside it).
    pub(crate) fn new(base: &str, token: Option<&str>) -> anyhow::Result<Api> {
        Ok(Api {
            http: crate::token::client(token)?,
            base: base.to_owned(),
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .with_context(|| path.to_owned())?;
        let status = response.status();
        let reply: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path} answered {status}: {reply}");
        }
        Ok(reply)
    }

    pub(crate) async fn create(&self, kind: &str, body: Value) -> anyhow::Result<String> {
        let reply = self
            .call(reqwest::Method::POST, &format!("/v1/{kind}?wait=30"), body)
            .await?;
        reply["inventory"]["uuid"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{kind} created without a uuid: {reply}"))
    }

    pub(crate) async fn act(&self, path: &str, body: Value) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, &format!("{path}?wait=30"), body)
            .await
            .map(drop)
    }

    /// Attaches the resource at `path` (e.g. `/v1/l2-networks/<uuid>`) to `cluster`.
    pub(crate) async fn attach_cluster(&self, path: &str, cluster: &str) -> anyhow::Result<()> {
        self.act(
            &format!("{path}/actions"),
            json!({"action": "attach_cluster", "cluster_uuid": cluster}),
        )
        .await
    }

    /// A flat network the hosts of `cluster` reach: an `L2NoVlanNetwork` on `eth0` attached
    /// to the cluster, an L3 network `name` on it and the IP range `range`; its L3 uuid.
    pub(crate) async fn flat_network(
        &self,
        zone: &str,
        cluster: &str,
        name: &str,
        range: Value,
    ) -> anyhow::Result<String> {
        let l2 = self
            .create(
                "l2-networks",
                json!({"type": "L2NoVlanNetwork", "name": format!("{name}-l2"),
                    "zone_uuid": zone, "physical_interface": "eth0"}),
            )
            .await?;
        self.attach_cluster(&format!("/v1/l2-networks/{l2}"), cluster)
            .await?;
        let l3 = self
            .create("l3-networks", json!({"name": name, "l2_network_uuid": l2}))
            .await?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/l3-networks/{l3}/ip-ranges?wait=30"),
            range,
        )
        .await?;
        Ok(l3)
    }

    async fn serves(&self, kind: &str) -> bool {
        matches!(self.http.get(format!("{}/v1/{kind}", self.base)).send().await, Ok(r) if r.status().is_success())
    }
}

/// Creates the demo data centre on the node at `base` unless it already has a zone.
pub async fn create(base: &str, token: Option<&str>) -> anyhow::Result<()> {
    let api = Api::new(base, token)?;
    let zones = api
        .call(reqwest::Method::GET, "/v1/zones", Value::Null)
        .await?;
    if zones["total"].as_u64().unwrap_or(0) > 0 {
        tracing::info!("the node already has zones; demo data centre not created");
        return Ok(());
    }
    let zone = api
        .create(
            "zones",
            json!({"name": "demo-zone", "description": "flatstack serve --demo"}),
        )
        .await?;
    let cluster = api
        .create(
            "clusters",
            json!({"name": "demo-cluster", "zone_uuid": zone, "hypervisor_type": "Simulator"}),
        )
        .await?;
    for i in 1..=3 {
        api.create("hosts", json!({"type": "Simulator", "name": format!("demo-host-{i}"), "cluster_uuid": cluster,
            "management_ip": format!("10.0.0.{}", 10 + i), "cpu_capacity": 64, "memory_capacity": 274877906944u64}))
            .await?;
    }
    let ps = api
        .create(
            "primary-storage",
            json!({"type": "Simulator", "name": "demo-ps", "zone_uuid": zone,
            "url": "/sim/demo-ps", "total_capacity": 10995116277760u64}),
        )
        .await?;
    api.attach_cluster(&format!("/v1/primary-storage/{ps}"), &cluster)
        .await?;
    let bs = api
        .create(
            "backup-storage",
            json!({"type": "Simulator", "name": "demo-bs", "zone_uuid": zone,
            "url": "/sim/demo-bs", "total_capacity": 10995116277760u64}),
        )
        .await?;
    api.create(
        "images",
        json!({"name": "cirros", "url": "http://example.invalid/cirros.qcow2", "format": "qcow2",
        "size": 41126400, "backup_storage_uuids": [bs]}),
    )
    .await?;
    if api.serves("l3-networks").await {
        let range = json!({"name": "demo-range", "start_ip": "192.168.100.10",
            "end_ip": "192.168.100.250", "netmask": "255.255.255.0", "gateway": "192.168.100.1"});
        api.flat_network(&zone, &cluster, "demo-flat", range)
            .await?;
    }
    // Last, so that scripts can tell the demo is complete when the offering exists.
    api.create(
        "instance-offerings",
        json!({"name": "small", "cpu_num": 1, "memory_size": 1073741824u64}),
    )
    .await?;
    tracing::info!("demo data centre created");
    Ok(())
}
