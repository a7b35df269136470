//! One node of the benchmark: its fabric (shm or verbs), its registered
//! buffer, and the means to reach the peer and find the peer's buffer.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_transport::shm::{ShmConfig, ShmFabric};
use rdma_transport::{
    Access, Backing, Endpoint, Fabric, FabricKind, LocalSlice, MemoryRegion, NodeId, Op, RemoteAddr,
};

use super::control::{
    pattern_byte, BUFFER_BYTES, COMMAND_OFFSET, CONTROL_BYTES, CONTROL_OFFSET, MAGIC, MAGIC_OFFSET,
    PATTERN_AREA_OFFSET, SLOT_BYTES, SLOT_COUNT,
};
use super::VerbsOptions;
use crate::error::{Error, Result};

/// How long one request may take before the benchmark gives up.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often connecting and finding the peer's buffer are retried.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// A failed fabric call, with what the benchmark was doing.
pub fn fabric_error(what: impl Into<String>) -> impl FnOnce(rdma_transport::Error) -> Error {
    let what = what.into();
    move |source| Error::Fabric { what, source }
}

enum NodeFabric {
    Shm(ShmFabric),
    #[cfg(feature = "verbs")]
    Verbs(rdma_transport::verbs::VerbsFabric),
}

impl NodeFabric {
    fn as_fabric(&self) -> &dyn Fabric {
        match self {
            NodeFabric::Shm(fabric) => fabric,
            #[cfg(feature = "verbs")]
            NodeFabric::Verbs(fabric) => fabric,
        }
    }
}

/// What a node is opened with.
pub struct NodeConfig<'a> {
    pub kind: FabricKind,
    pub node: NodeId,
    pub shm_dir: &'a Path,
    pub verbs: &'a VerbsOptions,
    /// Where a verbs node accepts handshakes.
    pub listen: SocketAddr,
}

pub struct BenchNode {
    // Field order is drop order: the memory before the fabric it is
    // registered with.
    pub mr: Arc<MemoryRegion>,
    fabric: NodeFabric,
    device: String,
}

impl BenchNode {
    pub fn open(config: NodeConfig<'_>) -> Result<BenchNode> {
        let (fabric, device) = match config.kind {
            FabricKind::Shm => {
                let fabric = ShmFabric::open(ShmConfig {
                    dir: config.shm_dir.to_path_buf(),
                    node: config.node,
                })
                .map_err(|source| Error::OpenFabric {
                    fabric: "shm",
                    node: config.node,
                    source,
                })?;
                let device = format!("shm ({})", config.shm_dir.display());
                (NodeFabric::Shm(fabric), device)
            }
            FabricKind::Verbs => open_verbs(&config)?,
        };
        let mr = fabric
            .as_fabric()
            .register(Backing::Anonymous { len: BUFFER_BYTES }, Access::ALL)
            .map_err(|source| Error::Register { source })?;
        let node = BenchNode { mr, fabric, device };
        let pattern: Vec<u8> = (0..SLOT_COUNT * SLOT_BYTES).map(pattern_byte).collect();
        node.mr
            .write(PATTERN_AREA_OFFSET, &pattern)
            .expect("the pattern area lies inside the buffer");
        // Release: a peer that READs the magic sees the pattern written
        // before it (the peer's READ is ordered after it by the fabric).
        node.word(MAGIC_OFFSET).store(MAGIC, Ordering::Release);
        Ok(node)
    }

    pub fn fabric(&self) -> &dyn Fabric {
        self.fabric.as_fabric()
    }

    /// The device, for report titles: `rxe0 (port 1, GID index 1)`,
    /// `shm (/path)`.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Where a verbs node accepts handshakes; `None` on shm.
    pub fn listen_address(&self) -> Option<SocketAddr> {
        match &self.fabric {
            NodeFabric::Shm(_) => None,
            #[cfg(feature = "verbs")]
            NodeFabric::Verbs(fabric) => Some(fabric.listen_address()),
        }
    }

    /// Tells a verbs node where `node` accepts handshakes; shm nodes find
    /// each other in their directory and ignore it.
    pub fn set_peer(&self, node: NodeId, address: SocketAddr) {
        match &self.fabric {
            NodeFabric::Shm(_) => {
                let _ = (node, address);
            }
            #[cfg(feature = "verbs")]
            NodeFabric::Verbs(fabric) => fabric.set_peer(node, address),
        }
    }

    /// The aligned word at `offset` of this node's buffer.
    pub fn word(&self, offset: u64) -> &AtomicU64 {
        self.mr
            .atomic_u64(offset)
            .expect("benchmark words are aligned and inside the buffer")
    }

    pub fn slice(&self, offset: u64, len: u32) -> LocalSlice {
        self.mr
            .slice(offset, len)
            .expect("benchmark slices lie inside the buffer")
    }

    /// Connects to `peer`, retrying while it is not up yet (a server
    /// started a moment after its client).
    pub fn connect(&self, peer: NodeId, timeout: Duration) -> Result<Box<dyn Endpoint>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fabric().connect(peer) {
                Ok(endpoint) => return Ok(endpoint),
                Err(
                    rdma_transport::Error::PeerUnreachable { .. }
                    | rdma_transport::Error::Connect { .. },
                ) if Instant::now() < deadline => std::thread::sleep(RETRY_INTERVAL),
                Err(source) => return Err(Error::Connect { node: peer, source }),
            }
        }
    }

    /// Finds the peer's benchmark buffer among its registrations: the one
    /// of [`BUFFER_BYTES`] whose control block holds [`MAGIC`]. Uses this
    /// node's command block as scratch space, so nothing else may be in
    /// flight.
    pub fn find_peer_buffer(
        &self,
        endpoint: &mut dyn Endpoint,
        timeout: Duration,
    ) -> Result<RemoteAddr> {
        let deadline = Instant::now() + timeout;
        let needed = Access::REMOTE_READ
            .union(Access::REMOTE_WRITE)
            .union(Access::REMOTE_ATOMIC);
        let magic_scratch = COMMAND_OFFSET + (MAGIC_OFFSET - CONTROL_OFFSET);
        loop {
            let regions = endpoint
                .remote_regions()
                .map_err(fabric_error("listing the peer's registrations"))?;
            for region in regions
                .iter()
                .filter(|region| region.len == BUFFER_BYTES && region.access.contains(needed))
            {
                let base = RemoteAddr {
                    node: endpoint.peer(),
                    key: region.key,
                    offset: 0,
                };
                self.word(magic_scratch).store(0, Ordering::Relaxed);
                let read = Op::Read {
                    local: self.slice(COMMAND_OFFSET, CONTROL_BYTES as u32),
                    remote: base.offset_by(CONTROL_OFFSET),
                };
                endpoint
                    .execute(&[read], OP_TIMEOUT)
                    .map_err(fabric_error("reading the peer's control block"))?;
                // Acquire: the READ completed before `execute` returned.
                if self.word(magic_scratch).load(Ordering::Acquire) == MAGIC {
                    return Ok(base);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::NoPeerBuffer {
                    node: endpoint.peer(),
                });
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
    }
}

#[cfg(feature = "verbs")]
fn open_verbs(config: &NodeConfig<'_>) -> Result<(NodeFabric, String)> {
    use rdma_transport::verbs::{VerbsConfig, VerbsFabric};
    let fabric = VerbsFabric::open(VerbsConfig {
        node: config.node,
        device: config.verbs.device.clone(),
        port: config.verbs.port,
        gid_index: config.verbs.gid_index,
        listen: config.listen,
        peers: Vec::new(),
    })
    .map_err(|source| Error::OpenFabric {
        fabric: "verbs",
        node: config.node,
        source,
    })?;
    let device = format!(
        "{} (port {}, GID index {})",
        fabric.device_name(),
        config.verbs.port,
        fabric.gid_index()
    );
    Ok((NodeFabric::Verbs(fabric), device))
}

#[cfg(not(feature = "verbs"))]
fn open_verbs(config: &NodeConfig<'_>) -> Result<(NodeFabric, String)> {
    // Read only by the verbs build.
    let _ = (config.verbs, config.listen);
    Err(Error::FabricNotBuilt { fabric: "verbs" })
}
