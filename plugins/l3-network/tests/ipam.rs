//! IP address management through the bus, on a kernel with a real SQLite store: the way
//! the VM plugin will use it (IPAM is not exposed over HTTP).

use flatstack_header::infra::CreateZone;
use flatstack_header::network::{
    AllocateIp, CreateIpRange, CreateL2Network, CreateL3Network, ListIpAddresses, ReleaseIp,
    IP_RANGE_SERVICE, L2_NETWORK_SERVICE, L2_NO_VLAN, L3_NETWORK_SERVICE,
};
use flatstack_header::{DeleteResource, Inventory};
use flatstack_kernel::{Fault, FaultCode, Kernel};
use flatstack_plugin_cluster::ClusterPlugin;
use flatstack_plugin_l2_network::L2NetworkPlugin;
use flatstack_plugin_l3_network::L3NetworkPlugin;
use flatstack_plugin_zone::ZonePlugin;
use flatstack_store::Store;
use std::collections::HashSet;
use std::sync::Arc;
use tempfile::TempDir;

struct Node {
    kernel: Kernel,
    store: Arc<Store>,
    _dir: TempDir,
}

/// Like the node's start: open the store, assemble, migrate in start order, start.
async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_data_dir(dir.path()).await.unwrap();
    let kernel = Kernel::builder()
        .provide(store.clone())
        .plugin(ZonePlugin)
        .plugin(ClusterPlugin)
        .plugin(L2NetworkPlugin)
        .plugin(L3NetworkPlugin)
        .build()
        .unwrap();
    let streams: Vec<_> = kernel
        .plugins()
        .into_iter()
        .filter_map(|p| Some((p.name.clone(), kernel.migrations().get(&p.name)?.clone())))
        .collect();
    store.migrate(&streams).await.unwrap();
    kernel.start().await.unwrap();
    Node {
        kernel,
        store,
        _dir: dir,
    }
}

fn uuid(inv: &Inventory) -> String {
    inv["uuid"].as_str().unwrap().to_owned()
}

fn range(name: &str, start: &str, end: &str) -> CreateIpRange {
    CreateIpRange {
        name: name.into(),
        description: String::new(),
        start_ip: start.into(),
        end_ip: end.into(),
        netmask: "255.255.0.0".into(),
        gateway: "10.0.0.1".into(),
        l3_network_uuid: None,
    }
}

/// A zone, an L2 network, an L3 network with one range; returns (L3 uuid, range uuid).
async fn l3_with_range(k: &Kernel, start: &str, end: &str) -> (String, String) {
    let zone = k
        .request(
            "zone",
            CreateZone {
                name: "z".into(),
                description: String::new(),
            },
        )
        .await
        .unwrap();
    let l2 = k
        .request(
            L2_NETWORK_SERVICE,
            CreateL2Network {
                l2_type: L2_NO_VLAN.into(),
                name: "l2".into(),
                description: String::new(),
                zone_uuid: uuid(&zone),
                physical_interface: "eth0".into(),
                driver: Inventory::new(),
            },
        )
        .await
        .unwrap();
    let l3 = k
        .request(
            L3_NETWORK_SERVICE,
            CreateL3Network {
                name: "l3".into(),
                description: String::new(),
                l2_network_uuid: uuid(&l2),
                account_uuid: flatstack_header::identity::ADMIN_ACCOUNT.into(),
                shared: true,
            },
        )
        .await
        .unwrap();
    let l3 = uuid(&l3);
    let r = k
        .request(L3_NETWORK_SERVICE, range("r1", start, end))
        .resource(l3.clone())
        .await
        .unwrap();
    (l3, uuid(&r))
}

async fn allocate(k: &Kernel, l3: &str, ip: Option<&str>) -> Result<String, Fault> {
    let inv = k
        .request(
            L3_NETWORK_SERVICE,
            AllocateIp {
                ip: ip.map(str::to_owned),
                consumer: None,
            },
        )
        .resource(l3)
        .await?;
    Ok(inv["ip"].as_str().unwrap().to_owned())
}

async fn release(k: &Kernel, l3: &str, ip: &str) -> Result<(), Fault> {
    k.request(L3_NETWORK_SERVICE, ReleaseIp { ip: ip.into() })
        .resource(l3)
        .await
}

#[tokio::test]
async fn allocates_the_lowest_free_address_or_the_one_asked_for() {
    let node = node().await;
    let k = &node.kernel;
    let (l3, range_uuid) = l3_with_range(k, "10.0.0.10", "10.0.0.20").await;

    let first = k
        .request(L3_NETWORK_SERVICE, AllocateIp::default())
        .resource(l3.clone())
        .await
        .unwrap();
    assert_eq!(first["ip"], "10.0.0.10");
    assert_eq!(first["l3_network_uuid"], l3.as_str());
    assert_eq!(first["ip_range_uuid"], range_uuid.as_str());
    assert_eq!(first["netmask"], "255.255.0.0", "a NIC needs it");
    assert_eq!(first["gateway"], "10.0.0.1");
    assert_eq!(uuid(&first).len(), 32);
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.11");

    // An explicit address, then the lowest free again skips nothing and reuses nothing.
    assert_eq!(
        allocate(k, &l3, Some("10.0.0.13")).await.unwrap(),
        "10.0.0.13"
    );
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.12");
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.14");

    let taken = allocate(k, &l3, Some("10.0.0.13")).await.unwrap_err();
    assert_eq!(taken.code, FaultCode::Conflict, "{taken}");
    assert_eq!(taken.detail_str("field"), Some("ip"));
    for outside in ["10.0.0.9", "10.0.0.21", "10.0.0.1", "192.168.0.10"] {
        let fault = allocate(k, &l3, Some(outside)).await.unwrap_err();
        assert_eq!(fault.code, FaultCode::InvalidArgument, "{outside}: {fault}");
        assert_eq!(fault.detail_str("field"), Some("ip"));
    }
    let bad = allocate(k, &l3, Some("10.0.0")).await.unwrap_err();
    assert_eq!(
        (bad.code, bad.detail_str("field")),
        (FaultCode::InvalidArgument, Some("ip"))
    );
    assert_eq!(node.store.count("ip_addresses").await.unwrap(), 5);

    // Release, then the freed address is the lowest free one again.
    release(k, &l3, "10.0.0.11").await.unwrap();
    let again = release(k, &l3, "10.0.0.11").await.unwrap_err();
    assert_eq!(again.code, FaultCode::NotFound, "{again}");
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.11");

    let listed = k
        .request(L3_NETWORK_SERVICE, ListIpAddresses::default())
        .resource(l3.clone())
        .await
        .unwrap();
    let ips: Vec<&str> = listed
        .inventories
        .iter()
        .map(|i| i["ip"].as_str().unwrap())
        .collect();
    assert_eq!(
        ips,
        [
            "10.0.0.10",
            "10.0.0.11",
            "10.0.0.12",
            "10.0.0.13",
            "10.0.0.14"
        ]
    );

    // An unknown L3 network is not found, for every IPAM message.
    let nowhere = "0".repeat(32);
    assert_eq!(
        allocate(k, &nowhere, None).await.unwrap_err().code,
        FaultCode::NotFound
    );
    assert_eq!(
        release(k, &nowhere, "10.0.0.10").await.unwrap_err().code,
        FaultCode::NotFound
    );
}

#[tokio::test]
async fn ranges_are_used_lowest_first_and_exhaustion_is_a_clear_fault() {
    let node = node().await;
    let k = &node.kernel;
    let (l3, _) = l3_with_range(k, "10.0.1.10", "10.0.1.11").await;
    // A lower range added later is used first.
    k.request(L3_NETWORK_SERVICE, range("low", "10.0.0.100", "10.0.0.100"))
        .resource(l3.clone())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(allocate(k, &l3, None).await.unwrap());
    }
    assert_eq!(got, ["10.0.0.100", "10.0.1.10", "10.0.1.11"]);
    let full = allocate(k, &l3, None).await.unwrap_err();
    assert_eq!(full.code, FaultCode::Conflict);
    assert!(full.message.contains("no free IP address"), "{full}");
}

#[tokio::test]
async fn concurrent_allocations_never_hand_out_an_address_twice() {
    let node = node().await;
    let k = &node.kernel;
    // 200 addresses: 10.0.0.10 .. 10.0.0.209.
    let (l3, _) = l3_with_range(k, "10.0.0.10", "10.0.0.209").await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (k, l3) = (k.clone(), l3.clone());
            tokio::spawn(async move { allocate(&k, &l3, None).await })
        })
        .collect();
    let mut ips = Vec::new();
    for task in futures::future::join_all(tasks).await {
        ips.push(task.unwrap().unwrap());
    }
    let distinct: HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 200, "an address was handed out twice");
    assert_eq!(node.store.count("ip_addresses").await.unwrap(), 200);
    let full = allocate(k, &l3, None).await.unwrap_err();
    assert_eq!(full.code, FaultCode::Conflict, "{full}");
    assert!(full.message.contains("every address"), "{full}");
}

#[tokio::test]
async fn allocated_addresses_keep_their_range_and_network() {
    let node = node().await;
    let k = &node.kernel;
    let (l3, range_uuid) = l3_with_range(k, "10.0.0.10", "10.0.0.20").await;
    allocate(k, &l3, None).await.unwrap();
    for (service, id) in [(IP_RANGE_SERVICE, &range_uuid), (L3_NETWORK_SERVICE, &l3)] {
        let fault = k
            .request(service, DeleteResource {})
            .resource(id.clone())
            .await
            .unwrap_err();
        assert_eq!(fault.code, FaultCode::Conflict, "{service}: {fault}");
        assert!(fault.message.contains("ip_addresses"), "{fault}");
    }
    release(k, &l3, "10.0.0.10").await.unwrap();
    k.request(IP_RANGE_SERVICE, DeleteResource {})
        .resource(range_uuid)
        .await
        .unwrap();
    k.request(L3_NETWORK_SERVICE, DeleteResource {})
        .resource(l3)
        .await
        .unwrap();
    for table in ["ip_addresses", "ip_ranges", "l3_networks"] {
        assert_eq!(node.store.count(table).await.unwrap(), 0, "{table}");
    }
}

#[tokio::test]
async fn a_range_added_below_the_allocated_ones_is_used_first() {
    let node = node().await;
    let k = &node.kernel;
    let (l3, _) = l3_with_range(k, "10.0.0.20", "10.0.0.30").await;
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.20");
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.21");
    // Added through the ranges' own route, which hands it to the network's queue.
    let mut lower = range("r0", "10.0.0.10", "10.0.0.11");
    lower.l3_network_uuid = Some(l3.clone());
    k.request(IP_RANGE_SERVICE, lower).await.unwrap();
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.10");
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.11");
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.22");
    // A freed address below the next candidate is found again.
    release(k, &l3, "10.0.0.20").await.unwrap();
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.20");
    assert_eq!(allocate(k, &l3, None).await.unwrap(), "10.0.0.23");
}
