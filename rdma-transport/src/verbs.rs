//! The verbs fabric: real RDMA NICs and soft-RoCE through libibverbs.
//!
//! A small safe layer over `rdma-sys`:
//! * queue-pair states are types ([`QueuePair<Reset>`] → `Init` → `Rtr` →
//!   `Rts`); only an `Rts` queue pair can post;
//! * lifetimes are tied by reference counting: every MR, CQ and QP holds an
//!   `Arc<Device>`, so the protection domain and the device context outlive
//!   them, and an endpoint keeps the local slices of posted requests until
//!   their completion has been polled;
//! * nothing is allocated on the post path: work requests and scatter
//!   entries live in buffers sized by [`crate::limits`] at connect time.
//!
//! Connections: each node listens on a TCP address. `connect(peer)` makes a
//! queue pair, sends its number, PSN and GID to the peer's listener
//! ([`crate::wire`]), which makes a passive queue pair for it and answers with
//! its own and with the node's registrations. The passive queue pair only
//! serves as the target of one-sided operations and of WRITE_WITH_IMM
//! notifications; it lives as long as the TCP connection does.
//!
//! RoCE addressing: every path uses a GRH (`is_global = 1`); the GID index
//! defaults to the port's IPv4-mapped RoCE v2 GID.

use std::ffi::CStr;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdma_sys::*;

use crate::access::Access;
use crate::error::{CompletionStatus, Error, Result};
use crate::fabric::{Endpoint, Fabric, FabricKind};
use crate::limits::{
    BATCH_WR_COUNT_MAX, HANDSHAKE_TIMEOUT_MS, INLINE_BYTES_MAX, MR_REMOTE_COUNT_MAX,
    PASSIVE_QP_MAX, RECEIVE_CQ_DEPTH, RECV_DEPTH, WR_OUTSTANDING_MAX,
};
use crate::mr::{Backing, Mapping, MemoryRegion, Registration};
use crate::op::{LocalSlice, NodeId, Op, RemoteRegion};
use crate::wire::{Message, QpInfo, WireError};

/// How a node attaches to an RDMA device and finds its peers.
#[derive(Clone, Debug)]
pub struct VerbsConfig {
    pub node: NodeId,
    /// Device name (`mlx5_0`, `rxe0`); the first device when `None`.
    pub device: Option<String>,
    pub port: u8,
    /// GID table index; the IPv4-mapped RoCE v2 GID when `None`.
    pub gid_index: Option<u8>,
    /// Where this node accepts connection handshakes.
    pub listen: SocketAddr,
    /// Where the other nodes accept theirs.
    pub peers: Vec<(NodeId, SocketAddr)>,
}

/// An opened device with its protection domain and the receive side shared
/// by all passive queue pairs. Dropped last, once nothing refers to it.
struct Device {
    name: String,
    context: *mut ibv_context,
    pd: *mut ibv_pd,
    port: u8,
    gid_index: u8,
    gid: [u8; 16],
    lid: u16,
    mtu: u32,
    rd_atomic: u8,
    /// Receive completions of every passive QP, with a channel to block on.
    /// Both are fixed for the device's life, so no lock guards them: a
    /// thread blocked in `wait_notified` must not stop a handshake.
    receive_cq: *mut ibv_cq,
    channel: *mut ibv_comp_channel,
    passive: Mutex<Vec<PassiveQp>>,
    /// One waiter at a time.
    waiter: Mutex<()>,
    /// Notifications drained by a thread other than a waiter (see
    /// `Device::replenish`), handed to the next `wait_notified`.
    drained: std::sync::atomic::AtomicU64,
    regions: Mutex<Vec<RemoteRegion>>,
}

// SAFETY: libibverbs contexts, PDs, CQs and QPs may be used from any thread
// (rdma-core documents the verbs as thread-safe); the mutable receive state is
// behind a Mutex.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

struct PassiveQp {
    qp: QueuePair<Rts>,
    id: u64,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.passive
            .get_mut()
            .expect("passive lock poisoned")
            .clear();
        // SAFETY: every QP using the CQ is gone (cleared above; endpoints own
        // their own CQs and hold an Arc to us, so they are gone too), and
        // every MR is gone (each holds an Arc to us). The order is the one
        // verbs requires: CQ, channel, PD, context.
        unsafe {
            ibv_destroy_cq(self.receive_cq);
            ibv_destroy_comp_channel(self.channel);
            ibv_dealloc_pd(self.pd);
            ibv_close_device(self.context);
        }
    }
}

fn os_error(what: &'static str, device: &str) -> Error {
    Error::Device {
        device: device.to_string(),
        what,
        source: io::Error::last_os_error(),
    }
}

fn errno_error(what: &'static str, device: &str, code: i32) -> Error {
    Error::Device {
        device: device.to_string(),
        what,
        source: io::Error::from_raw_os_error(code.abs()),
    }
}

impl Device {
    fn open(config: &VerbsConfig) -> Result<Arc<Device>> {
        let mut count = 0;
        // SAFETY: the list is freed below, after the one device we use has
        // been opened (an opened context stays valid after the free).
        let list = unsafe { ibv_get_device_list(&mut count) };
        if list.is_null() {
            return Err(Error::NoDevice {
                wanted: config.device.clone(),
            });
        }
        let mut chosen = None;
        for index in 0..count.max(0) as usize {
            // SAFETY: the list has `count` entries.
            let device = unsafe { *list.add(index) };
            // SAFETY: a device of the list has a NUL-terminated name.
            let name = unsafe { CStr::from_ptr(ibv_get_device_name(device)) }
                .to_string_lossy()
                .into_owned();
            if config.device.as_ref().is_none_or(|wanted| *wanted == name) {
                chosen = Some((device, name));
                break;
            }
        }
        let Some((device, name)) = chosen else {
            // SAFETY: the list came from ibv_get_device_list.
            unsafe { ibv_free_device_list(list) };
            return Err(Error::NoDevice {
                wanted: config.device.clone(),
            });
        };
        // SAFETY: `device` is an entry of the live list.
        let context = unsafe { ibv_open_device(device) };
        // SAFETY: the list came from ibv_get_device_list; `context` does not
        // depend on it.
        unsafe { ibv_free_device_list(list) };
        if context.is_null() {
            return Err(os_error("open", &name));
        }
        // From here on, a failure must release what was made: build the
        // pieces, then the struct whose Drop releases them all.
        // SAFETY: zeroed attribute structs are valid outputs for the queries.
        let mut port_attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `context` is open; `port_attr` is a valid output.
        let rc = unsafe { ___ibv_query_port(context, config.port, &mut port_attr) };
        // SAFETY: as above.
        let mut device_attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        let rc2 = if rc == 0 {
            // SAFETY: `context` is open; `device_attr` is a valid output.
            unsafe { ibv_query_device(context, &mut device_attr) }
        } else {
            rc
        };
        if rc != 0 || rc2 != 0 {
            // SAFETY: nothing else was made on the context.
            unsafe { ibv_close_device(context) };
            return Err(errno_error(
                "query port/device",
                &name,
                if rc != 0 { rc } else { rc2 },
            ));
        }
        let gid_index = match config.gid_index {
            Some(index) => index,
            None => pick_gid_index(&name, config.port, port_attr.gid_tbl_len.max(0) as u32),
        };
        let mut gid = ibv_gid { raw: [0; 16] };
        // SAFETY: `gid` is a valid output; the index is within the table or the
        // call fails.
        if unsafe { ibv_query_gid(context, config.port, i32::from(gid_index), &mut gid) } != 0 {
            // SAFETY: nothing else was made on the context.
            unsafe { ibv_close_device(context) };
            return Err(os_error("query gid", &name));
        }
        // SAFETY: every bit pattern is a valid [u8; 16].
        let gid = unsafe { gid.raw };
        // SAFETY: `context` is open.
        let pd = unsafe { ibv_alloc_pd(context) };
        let channel = if pd.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: `context` is open.
            unsafe { ibv_create_comp_channel(context) }
        };
        let cq = if channel.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: `channel` belongs to `context`.
            unsafe {
                ibv_create_cq(
                    context,
                    RECEIVE_CQ_DEPTH as i32,
                    ptr::null_mut(),
                    channel,
                    0,
                )
            }
        };
        if cq.is_null() {
            let error = os_error("allocate PD / completion channel / CQ", &name);
            // SAFETY: release in reverse order whatever was made.
            unsafe {
                if !channel.is_null() {
                    ibv_destroy_comp_channel(channel);
                }
                if !pd.is_null() {
                    ibv_dealloc_pd(pd);
                }
                ibv_close_device(context);
            }
            return Err(error);
        }
        // The waiter polls the channel's descriptor with a timeout, so it must
        // not block in ibv_get_cq_event.
        // SAFETY: `channel` is valid and its fd is open.
        unsafe {
            let fd = (*channel).fd;
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let rd_atomic = device_attr
            .max_qp_rd_atom
            .min(device_attr.max_qp_init_rd_atom)
            .clamp(1, 16) as u8;
        Ok(Arc::new(Device {
            name,
            context,
            pd,
            port: config.port,
            gid_index,
            gid,
            lid: port_attr.lid,
            mtu: port_attr.active_mtu,
            rd_atomic,
            receive_cq: cq,
            channel,
            passive: Mutex::new(Vec::new()),
            waiter: Mutex::new(()),
            drained: std::sync::atomic::AtomicU64::new(0),
            regions: Mutex::new(Vec::new()),
        }))
    }

    fn qp_info(&self, node: NodeId, qpn: u32, psn: u32) -> QpInfo {
        QpInfo {
            node,
            qpn,
            psn,
            lid: self.lid,
            gid: self.gid,
            mtu: self.mtu as u8,
        }
    }
}

/// Prefers the IPv4-mapped RoCE v2 GID (`::ffff:a.b.c.d`), then any RoCE v2
/// GID, then index 0 (InfiniBand, or RoCE v1 only). The GID types are read
/// from sysfs, which every rdma-core system has.
fn pick_gid_index(device: &str, port: u8, table_len: u32) -> u8 {
    let base = format!("/sys/class/infiniband/{device}/ports/{port}");
    let mut any_v2 = None;
    for index in 0..table_len.min(256) {
        let kind =
            std::fs::read_to_string(format!("{base}/gid_attrs/types/{index}")).unwrap_or_default();
        let gid = std::fs::read_to_string(format!("{base}/gids/{index}")).unwrap_or_default();
        if !kind.trim().eq_ignore_ascii_case("RoCE v2")
            || gid.trim() == "0000:0000:0000:0000:0000:0000:0000:0000"
        {
            continue;
        }
        if gid.trim().starts_with("0000:0000:0000:0000:0000:ffff:") {
            return index as u8;
        }
        any_v2.get_or_insert(index as u8);
    }
    any_v2.unwrap_or(0)
}

/// Queue-pair states, as types.
pub struct Reset;
pub struct Init;
pub struct Rtr;
pub struct Rts;

/// An RC queue pair in state `S`. Only `QueuePair<Rts>` can post sends.
pub struct QueuePair<S> {
    qp: *mut ibv_qp,
    device: Arc<Device>,
    _state: PhantomData<S>,
}

// SAFETY: a QP may be used from any thread (verbs are thread-safe); each
// QueuePair is owned by one endpoint or by the receive side under its lock.
unsafe impl<S> Send for QueuePair<S> {}

impl<S> Drop for QueuePair<S> {
    fn drop(&mut self) {
        // SAFETY: the QP is ours; destroying it flushes its work requests,
        // whose local memory the owner still holds.
        unsafe { ibv_destroy_qp(self.qp) };
    }
}

impl<S> QueuePair<S> {
    fn number(&self) -> u32 {
        // SAFETY: the QP is live.
        unsafe { (*self.qp).qp_num }
    }

    fn modify<T>(
        self,
        attr: &mut ibv_qp_attr,
        mask: ibv_qp_attr_mask,
        what: &'static str,
    ) -> Result<QueuePair<T>> {
        // SAFETY: `attr` is fully initialised for the fields in `mask`.
        let rc = unsafe { ibv_modify_qp(self.qp, attr, mask.0 as i32) };
        if rc != 0 {
            return Err(errno_error(what, &self.device.name, rc));
        }
        let next = QueuePair {
            qp: self.qp,
            device: self.device.clone(),
            _state: PhantomData,
        };
        std::mem::forget(self);
        Ok(next)
    }
}

impl QueuePair<Reset> {
    fn create(
        device: &Arc<Device>,
        send_cq: *mut ibv_cq,
        recv_cq: *mut ibv_cq,
        recv_depth: u32,
    ) -> Result<Self> {
        // SAFETY: zero is a valid value for every field of the init attributes.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = send_cq;
        init.recv_cq = recv_cq;
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        init.cap.max_send_wr = WR_OUTSTANDING_MAX as u32;
        init.cap.max_recv_wr = recv_depth;
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        init.cap.max_inline_data = INLINE_BYTES_MAX;
        // SAFETY: the PD and CQs are live (the device Arc and the caller).
        let qp = unsafe { ibv_create_qp(device.pd, &mut init) };
        if qp.is_null() {
            return Err(os_error("create QP", &device.name));
        }
        Ok(QueuePair {
            qp,
            device: device.clone(),
            _state: PhantomData,
        })
    }

    fn into_init(self) -> Result<QueuePair<Init>> {
        // SAFETY: zero is valid for every attribute.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_INIT;
        attr.pkey_index = 0;
        attr.port_num = self.device.port;
        // The QP allows everything; each MR restricts what peers may do.
        attr.qp_access_flags = Access::ALL.verbs_bits();
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        self.modify(&mut attr, mask, "move QP to INIT")
    }
}

impl QueuePair<Init> {
    fn post_receives(&self, count: usize, id: u64) -> Result<()> {
        for _ in 0..count {
            post_receive(self.qp, id, &self.device.name)?;
        }
        Ok(())
    }

    fn into_rtr(self, remote: &QpInfo) -> Result<QueuePair<Rtr>> {
        // SAFETY: zero is valid for every attribute.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_RTR;
        attr.path_mtu = u32::from(remote.mtu).min(self.device.mtu);
        attr.dest_qp_num = remote.qpn;
        attr.rq_psn = remote.psn;
        attr.max_dest_rd_atomic = self.device.rd_atomic;
        attr.min_rnr_timer = 12;
        attr.ah_attr.is_global = 1;
        attr.ah_attr.dlid = remote.lid;
        attr.ah_attr.port_num = self.device.port;
        attr.ah_attr.grh.dgid = ibv_gid { raw: remote.gid };
        attr.ah_attr.grh.sgid_index = self.device.gid_index;
        attr.ah_attr.grh.hop_limit = 64;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_AV
            | ibv_qp_attr_mask::IBV_QP_PATH_MTU
            | ibv_qp_attr_mask::IBV_QP_DEST_QPN
            | ibv_qp_attr_mask::IBV_QP_RQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
            | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        self.modify(&mut attr, mask, "move QP to RTR")
    }
}

impl QueuePair<Rtr> {
    fn into_rts(self, psn: u32) -> Result<QueuePair<Rts>> {
        // SAFETY: zero is valid for every attribute.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_RTS;
        attr.sq_psn = psn;
        attr.timeout = QP_ACK_TIMEOUT_EXPONENT;
        attr.retry_cnt = QP_RETRY_COUNT;
        attr.rnr_retry = QP_RNR_RETRY_INFINITE;
        attr.max_rd_atomic = self.device.rd_atomic;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_TIMEOUT
            | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
            | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
            | ibv_qp_attr_mask::IBV_QP_SQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        self.modify(&mut attr, mask, "move QP to RTS")
    }
}

/// How long a requester waits for an ACK before it sends again:
/// 4.096 µs × 2^14 ≈ 67 ms.
const QP_ACK_TIMEOUT_EXPONENT: u8 = 14;
/// Sends again after a missing ACK this many times, then fails the request
/// with "transport retry counter exceeded" and moves the queue pair to the
/// error state: with [`QP_ACK_TIMEOUT_EXPONENT`], a dead peer is reported
/// about half a second after the request was posted.
///
/// Not 7: soft-RoCE (rxe) takes a retry count of 7 to mean "retry for
/// ever", as the specification has it for the RNR retry count only, so a
/// request to a peer whose process died never completed there, and every
/// caller waited out its own timeout instead (10 s for each write to a dead
/// node during recovery; found with `farm check --nemesis kill` over verbs
/// in the soft-RoCE VM).
const QP_RETRY_COUNT: u8 = 6;
/// Receiver not ready: retry for ever (7, by the specification). A peer
/// whose receives ran out re-posts them as it polls (`Device::replenish`).
const QP_RNR_RETRY_INFINITE: u8 = 7;
// The fields are 3 bits wide; 7 would mean "for ever" on soft-RoCE.
const _: () = assert!(QP_RETRY_COUNT < 7);
const _: () = assert!(QP_ACK_TIMEOUT_EXPONENT <= 31);

/// Posts one receive with no buffer: WRITE_WITH_IMM consumes a receive but
/// no receive memory.
fn post_receive(qp: *mut ibv_qp, id: u64, device: &str) -> Result<()> {
    let mut wr = ibv_recv_wr {
        wr_id: id,
        next: ptr::null_mut(),
        sg_list: ptr::null_mut(),
        num_sge: 0,
    };
    let mut bad = ptr::null_mut();
    // SAFETY: `wr` is valid for the call and carries no memory.
    let rc = unsafe { ibv_post_recv(qp, &mut wr, &mut bad) };
    if rc != 0 {
        return Err(errno_error("post receive", device, rc));
    }
    Ok(())
}

fn random_psn() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id().rotate_left(12)) & 0x00ff_ffff
}

pub struct VerbsFabric {
    config: VerbsConfig,
    peers: Mutex<Vec<(NodeId, SocketAddr)>>,
    device: Arc<Device>,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
    listen_address: SocketAddr,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl VerbsFabric {
    pub fn open(config: VerbsConfig) -> Result<VerbsFabric> {
        let listener = TcpListener::bind(config.listen).map_err(|source| Error::Connect {
            node: config.node,
            address: config.listen.to_string(),
            source,
        })?;
        VerbsFabric::open_with_listener(config, listener)
    }

    /// [`VerbsFabric::open`] with the handshake listener already bound (a
    /// launcher that reserved the port and handed the socket down, so that
    /// no other process can take the port in between); `config.listen` is
    /// only used in messages.
    pub fn open_with_listener(config: VerbsConfig, listener: TcpListener) -> Result<VerbsFabric> {
        let device = Device::open(&config)?;
        let listen_address = listener.local_addr().map_err(|source| Error::Connect {
            node: config.node,
            address: config.listen.to_string(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (device, stop, connections, node) = (
                device.clone(),
                stop.clone(),
                connections.clone(),
                config.node,
            );
            std::thread::Builder::new()
                .name(format!("farm-verbs-listen-{node}"))
                .spawn(move || accept_loop(listener, device, node, stop, connections))
                .map_err(|source| Error::Connect {
                    node: config.node,
                    address: config.listen.to_string(),
                    source,
                })?
        };
        Ok(VerbsFabric {
            peers: Mutex::new(config.peers.clone()),
            config,
            device,
            stop,
            listener: Some(thread),
            listen_address,
            connections,
        })
    }

    /// The address handshakes are accepted on (useful with port 0).
    pub fn listen_address(&self) -> SocketAddr {
        self.listen_address
    }

    pub fn device_name(&self) -> &str {
        &self.device.name
    }

    pub fn gid_index(&self) -> u8 {
        self.device.gid_index
    }

    /// Adds or replaces where `node` accepts handshakes.
    pub fn set_peer(&self, node: NodeId, address: SocketAddr) {
        let mut peers = self.peers.lock().expect("peers lock poisoned");
        peers.retain(|(known, _)| *known != node);
        peers.push((node, address));
    }
}

impl Drop for VerbsFabric {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop; it sees the flag and exits.
        let _ = TcpStream::connect_timeout(&self.listen_address, Duration::from_millis(200));
        if let Some(thread) = self.listener.take() {
            let _ = thread.join();
        }
        for stream in self
            .connections
            .lock()
            .expect("connections lock poisoned")
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    device: Arc<Device>,
    node: NodeId,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(clone) = stream.try_clone() {
            connections
                .lock()
                .expect("connections lock poisoned")
                .push(clone);
        }
        let device = device.clone();
        let _ = std::thread::Builder::new()
            .name(format!("farm-verbs-peer-{node}"))
            .spawn(move || {
                if let Err(error) = serve_peer(stream, &device, node) {
                    if std::env::var_os("FARM_VERBS_DEBUG").is_some() {
                        eprintln!("farm verbs node {node}: peer connection ended: {error}");
                    }
                }
            });
    }
}

/// The passive side of one connection: answer its Connect with a queue pair,
/// then its region queries, until it hangs up.
fn serve_peer(mut stream: TcpStream, device: &Arc<Device>, node: NodeId) -> Result<(), WireError> {
    let timeout = Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS));
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    stream.set_nodelay(true)?;
    let remote = match Message::read_from(&mut stream) {
        Ok(Message::Connect(remote)) => remote,
        Ok(other) => {
            let _ = Message::Refuse(format!("expected Connect, got {}", other.name()))
                .write_to(&mut stream);
            return Err(WireError::Unexpected {
                got: other.name(),
                expected: "Connect",
            });
        }
        Err(error) => {
            let _ = Message::Refuse(error.to_string()).write_to(&mut stream);
            return Err(error);
        }
    };
    let id = remote.qpn as u64 | (u64::from(remote.node.0) << 32);
    let made = (|| -> Result<(QueuePair<Rts>, u32)> {
        let cq = device.receive_cq;
        if device.passive.lock().expect("passive lock poisoned").len() >= PASSIVE_QP_MAX {
            return Err(Error::InvalidArgument(format!(
                "node already serves {PASSIVE_QP_MAX} connections, the most its receive CQ can hold"
            )));
        }
        let qp = QueuePair::create(device, cq, cq, RECV_DEPTH as u32)?.into_init()?;
        qp.post_receives(RECV_DEPTH, id)?;
        let psn = random_psn();
        let qp = qp.into_rtr(&remote)?.into_rts(psn)?;
        Ok((qp, psn))
    })();
    let (qp, psn) = match made {
        Ok(made) => made,
        Err(error) => {
            let _ = Message::Refuse(error.to_string()).write_to(&mut stream);
            return Err(WireError::Refused(error.to_string()));
        }
    };
    let info = device.qp_info(node, qp.number(), psn);
    let regions = device
        .regions
        .lock()
        .expect("regions lock poisoned")
        .clone();
    device
        .passive
        .lock()
        .expect("passive lock poisoned")
        .push(PassiveQp { qp, id });
    let result = (|| {
        Message::Accept { qp: info, regions }.write_to(&mut stream)?;
        stream.set_read_timeout(None)?;
        loop {
            match Message::read_from(&mut stream)? {
                Message::QueryRegions => {
                    let regions = device
                        .regions
                        .lock()
                        .expect("regions lock poisoned")
                        .clone();
                    Message::Regions(regions).write_to(&mut stream)?;
                }
                other => {
                    let _ = Message::Refuse(format!("unexpected {}", other.name()))
                        .write_to(&mut stream);
                    return Err(WireError::Unexpected {
                        got: other.name(),
                        expected: "QueryRegions",
                    });
                }
            }
        }
    })();
    device
        .passive
        .lock()
        .expect("passive lock poisoned")
        .retain(|passive| passive.id != id);
    result
}

struct VerbsRegistration {
    mr: *mut ibv_mr,
    key: u32,
    remote: bool,
    device: Arc<Device>,
}

// SAFETY: an MR handle may be used and deregistered from any thread.
unsafe impl Send for VerbsRegistration {}
// SAFETY: as above; it is never mutated after creation.
unsafe impl Sync for VerbsRegistration {}

impl Registration for VerbsRegistration {}

impl Drop for VerbsRegistration {
    fn drop(&mut self) {
        if self.remote {
            self.device
                .regions
                .lock()
                .expect("regions lock poisoned")
                .retain(|region| region.key != self.key);
        }
        // SAFETY: the MR is ours and the mapping it covers is unmapped only
        // after this (MemoryRegion's field order).
        unsafe { ibv_dereg_mr(self.mr) };
    }
}

impl Fabric for VerbsFabric {
    fn node(&self) -> NodeId {
        self.config.node
    }

    fn kind(&self) -> FabricKind {
        FabricKind::Verbs
    }

    fn register(&self, backing: Backing, access: Access) -> Result<Arc<MemoryRegion>> {
        let mapping = Mapping::new(&backing)?;
        // Verbs requires local write whenever a peer may write.
        let mut verbs_access = access;
        if access.contains(Access::REMOTE_WRITE) || access.contains(Access::REMOTE_ATOMIC) {
            verbs_access = verbs_access | Access::LOCAL_WRITE;
        }
        if access.is_remote()
            && self
                .device
                .regions
                .lock()
                .expect("regions lock poisoned")
                .len()
                >= MR_REMOTE_COUNT_MAX
        {
            return Err(Error::InvalidArgument(format!(
                "more than {MR_REMOTE_COUNT_MAX} registrations with remote access"
            )));
        }
        // SAFETY: the mapping is live for the MR's lifetime (MemoryRegion
        // drops the registration before the mapping).
        let mr = unsafe {
            ibv_reg_mr(
                self.device.pd,
                mapping.map.as_mut_ptr().cast(),
                mapping.len as usize,
                verbs_access.verbs_bits() as i32,
            )
        };
        if mr.is_null() {
            return Err(Error::Register {
                len: mapping.len,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: the MR is live.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        if access.is_remote() {
            self.device
                .regions
                .lock()
                .expect("regions lock poisoned")
                .push(RemoteRegion {
                    key: rkey,
                    addr: mapping.map.as_mut_ptr() as u64,
                    len: mapping.len,
                    access,
                });
        }
        Ok(Arc::new(MemoryRegion::new(
            mapping,
            verbs_access,
            (lkey, rkey),
            Box::new(VerbsRegistration {
                mr,
                key: rkey,
                remote: access.is_remote(),
                device: self.device.clone(),
            }),
        )))
    }

    fn connect(&self, peer: NodeId) -> Result<Box<dyn Endpoint>> {
        let address = self
            .peers
            .lock()
            .expect("peers lock poisoned")
            .iter()
            .find(|(node, _)| *node == peer)
            .map(|(_, address)| *address)
            .ok_or(Error::UnknownNode { node: peer })?;
        let connect_error = |source| Error::Connect {
            node: peer,
            address: address.to_string(),
            source,
        };
        let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
        let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(connect_error)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(connect_error)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let cq = CompletionQueue::new(&self.device)?;
        let qp = QueuePair::create(&self.device, cq.cq, cq.cq, 1)?.into_init()?;
        let psn = random_psn();
        let handshake = |source| Error::Handshake {
            peer: format!("node {peer} at {address}"),
            source,
        };
        Message::Connect(self.device.qp_info(self.config.node, qp.number(), psn))
            .write_to(&mut stream)
            .map_err(handshake)?;
        let (remote, regions) = match Message::read_from(&mut stream).map_err(handshake)? {
            Message::Accept { qp, regions } => (qp, regions),
            Message::Refuse(reason) => return Err(handshake(WireError::Refused(reason))),
            other => {
                return Err(handshake(WireError::Unexpected {
                    got: other.name(),
                    expected: "Accept",
                }))
            }
        };
        if remote.node != peer {
            return Err(handshake(WireError::Refused(format!(
                "the process at {address} is node {}, not node {peer}",
                remote.node
            ))));
        }
        let qp = qp.into_rtr(&remote)?.into_rts(psn)?;
        Ok(Box::new(VerbsEndpoint {
            qp,
            cq,
            node: self.config.node,
            peer,
            control: stream,
            remote: regions,
            in_flight: Vec::with_capacity(WR_OUTSTANDING_MAX),
            outstanding: 0,
            signaled: 0,
            wrs: Vec::with_capacity(BATCH_WR_COUNT_MAX),
            sges: Vec::with_capacity(BATCH_WR_COUNT_MAX),
            broken: false,
        }))
    }

    fn progress(&self) -> Result<()> {
        self.device.replenish()
    }

    fn wait_notified(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let device = &self.device;
        let _waiter = device.waiter.lock().expect("waiter lock poisoned");
        loop {
            let count = device.drain()? + device.drained.swap(0, Ordering::AcqRel);
            if count > 0 {
                return Ok(count);
            }
            // Arm, then drain again: a completion that arrived between the
            // drain and the arming would otherwise raise no event.
            // SAFETY: the CQ is live.
            unsafe { ibv_req_notify_cq(device.receive_cq, 0) };
            let count = device.drain()?;
            if count > 0 {
                return Ok(count);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            let mut poll = libc::pollfd {
                // SAFETY: the channel is live for the device's life.
                fd: unsafe { (*device.channel).fd },
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe {
                libc::poll(
                    &mut poll,
                    1,
                    left.as_millis().clamp(1, i32::MAX as u128) as i32,
                )
            };
            if ready > 0 {
                let mut cq = ptr::null_mut();
                let mut context = ptr::null_mut();
                // SAFETY: the channel is live and non-blocking; on success the
                // event is acknowledged right away.
                if unsafe { ibv_get_cq_event(device.channel, &mut cq, &mut context) } == 0 {
                    // SAFETY: `cq` is the CQ the event came from.
                    unsafe { ibv_ack_cq_events(cq, 1) };
                }
            }
        }
    }
}

impl Device {
    /// Re-posts consumed receives on behalf of whoever is waiting: called by
    /// every thread that polls for its own completions. Without it, two
    /// nodes whose server threads both wait for a WRITE_WITH_IMM to the
    /// other would deadlock: each one's receives run out (the peer's
    /// notification gets RNR-NAKed and retried forever) because the only
    /// thread that re-posts them is the one blocked. Found with `farm check
    /// --fabric verbs` in the soft-RoCE VM.
    fn replenish(&self) -> Result<()> {
        let count = self.drain()?;
        if count > 0 {
            self.drained.fetch_add(count, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Polls every receive completion, re-posting a receive for each, and
    /// returns how many notifications arrived. Notifications that arrive
    /// while nobody waits stay in the CQ until the next wait drains them.
    fn drain(&self) -> Result<u64> {
        let mut count = 0;
        // SAFETY: ibv_wc is plain data; zero is a valid initial value.
        let mut completions: [ibv_wc; 16] = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: the CQ is live and the array has 16 entries.
            let polled = unsafe { ibv_poll_cq(self.receive_cq, 16, completions.as_mut_ptr()) };
            if polled < 0 {
                return Err(errno_error("poll receive CQ", &self.name, polled));
            }
            for completion in &completions[..polled as usize] {
                if completion.status != 0 {
                    // A flushed receive of a QP being destroyed.
                    continue;
                }
                count += 1;
                // Keep the receive queue full: re-post on the QP it came from.
                let passive = self.passive.lock().expect("passive lock poisoned");
                if let Some(passive) = passive.iter().find(|p| p.qp.number() == completion.qp_num) {
                    post_receive(passive.qp.qp, passive.id, &self.name)?;
                }
            }
            if polled < 16 {
                return Ok(count);
            }
        }
    }
}

struct CompletionQueue {
    cq: *mut ibv_cq,
    _device: Arc<Device>,
}

// SAFETY: a CQ may be polled from any thread; each is owned by one endpoint.
unsafe impl Send for CompletionQueue {}

impl CompletionQueue {
    fn new(device: &Arc<Device>) -> Result<CompletionQueue> {
        // SAFETY: the context is live.
        let cq = unsafe {
            ibv_create_cq(
                device.context,
                (WR_OUTSTANDING_MAX + 1) as i32,
                ptr::null_mut(),
                ptr::null_mut(),
                0,
            )
        };
        if cq.is_null() {
            return Err(os_error("create CQ", &device.name));
        }
        Ok(CompletionQueue {
            cq,
            _device: device.clone(),
        })
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: the endpoint drops its QP before its CQ (field order).
        unsafe { ibv_destroy_cq(self.cq) };
    }
}

pub struct VerbsEndpoint {
    // Field order is drop order: the QP before its CQ.
    qp: QueuePair<Rts>,
    cq: CompletionQueue,
    /// This node: carried as immediate data of notifications.
    node: NodeId,
    peer: NodeId,
    control: TcpStream,
    remote: Vec<RemoteRegion>,
    /// The local memory of posted, uncompleted requests, kept alive until
    /// their completion is polled (the contract of registered memory).
    in_flight: Vec<LocalSlice>,
    outstanding: usize,
    signaled: usize,
    wrs: Vec<ibv_send_wr>,
    sges: Vec<ibv_sge>,
    broken: bool,
}

// SAFETY: the raw work-request buffers point only into this endpoint's own
// vectors and into memory kept alive by `in_flight`.
unsafe impl Send for VerbsEndpoint {}

impl VerbsEndpoint {
    fn target(&mut self, key: u32) -> Result<RemoteRegion> {
        if let Some(region) = self.remote.iter().find(|region| region.key == key) {
            return Ok(*region);
        }
        // A registration made after we connected: ask the peer once.
        self.refresh_regions()?;
        self.remote
            .iter()
            .find(|region| region.key == key)
            .copied()
            .ok_or(Error::UnknownRemoteKey {
                node: self.peer,
                key,
            })
    }

    fn refresh_regions(&mut self) -> Result<()> {
        let handshake = |source| Error::Handshake {
            peer: format!("node {}", self.peer),
            source,
        };
        Message::QueryRegions
            .write_to(&mut self.control)
            .map_err(handshake)?;
        match Message::read_from(&mut self.control).map_err(handshake)? {
            Message::Regions(regions) => self.remote = regions,
            other => {
                return Err(handshake(WireError::Unexpected {
                    got: other.name(),
                    expected: "Regions",
                }))
            }
        }
        Ok(())
    }
}

impl Endpoint for VerbsEndpoint {
    fn peer(&self) -> NodeId {
        self.peer
    }

    fn post(&mut self, batch: &[Op]) -> Result<()> {
        if self.broken {
            return Err(Error::EndpointBroken { node: self.peer });
        }
        if batch.is_empty() {
            return Ok(());
        }
        if batch.len() > BATCH_WR_COUNT_MAX {
            return Err(Error::BatchTooLarge {
                count: batch.len(),
                max: BATCH_WR_COUNT_MAX,
            });
        }
        if self.outstanding + batch.len() > WR_OUTSTANDING_MAX {
            return Err(Error::QueueFull {
                outstanding: self.outstanding,
                max: WR_OUTSTANDING_MAX,
            });
        }
        let mut addresses = [0u64; BATCH_WR_COUNT_MAX];
        for (slot, op) in addresses.iter_mut().zip(batch) {
            let target = self.target(op.remote().key)?;
            op.validate(self.peer, &target)?;
            *slot = target.addr + op.remote().offset;
        }
        self.wrs.clear();
        self.sges.clear();
        for op in batch {
            let local = op.local();
            self.sges.push(ibv_sge {
                addr: local.mr.as_ptr() as u64 + local.offset,
                length: local.len,
                lkey: local.mr.lkey(),
            });
            // SAFETY: zero is a valid ibv_send_wr (null pointers, no flags).
            self.wrs.push(unsafe { std::mem::zeroed() });
        }
        let count = batch.len();
        for (index, op) in batch.iter().enumerate() {
            let next = if index + 1 < count {
                &mut self.wrs[index + 1] as *mut ibv_send_wr
            } else {
                ptr::null_mut()
            };
            let sge = &mut self.sges[index] as *mut ibv_sge;
            let wr = &mut self.wrs[index];
            wr.wr_id = index as u64;
            wr.next = next;
            wr.sg_list = sge;
            wr.num_sge = i32::from(op.local().len > 0);
            let mut flags = 0;
            if index + 1 == count {
                flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
            }
            match op {
                Op::Read { .. } => {
                    wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
                    wr.wr.rdma = rdma_t {
                        remote_addr: addresses[index],
                        rkey: op.remote().key,
                    };
                }
                Op::Write { local, .. } | Op::WriteNotify { local, .. } => {
                    wr.opcode = if matches!(op, Op::Write { .. }) {
                        ibv_wr_opcode::IBV_WR_RDMA_WRITE
                    } else {
                        wr.imm_data_invalidated_rkey_union.imm_data =
                            u32::from(self.node.0).to_be();
                        ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
                    };
                    if local.len <= INLINE_BYTES_MAX {
                        flags |= ibv_send_flags::IBV_SEND_INLINE.0;
                    }
                    wr.wr.rdma = rdma_t {
                        remote_addr: addresses[index],
                        rkey: op.remote().key,
                    };
                }
                Op::CompareSwap { expected, swap, .. } => {
                    wr.opcode = ibv_wr_opcode::IBV_WR_ATOMIC_CMP_AND_SWP;
                    wr.wr.atomic = atomic_t {
                        remote_addr: addresses[index],
                        compare_add: *expected,
                        swap: *swap,
                        rkey: op.remote().key,
                    };
                }
                Op::FetchAdd { add, .. } => {
                    wr.opcode = ibv_wr_opcode::IBV_WR_ATOMIC_FETCH_AND_ADD;
                    wr.wr.atomic = atomic_t {
                        remote_addr: addresses[index],
                        compare_add: *add,
                        swap: 0,
                        rkey: op.remote().key,
                    };
                }
            }
            wr.send_flags = flags;
        }
        let mut bad = ptr::null_mut();
        // SAFETY: (1) the chain points into `wrs`/`sges`, which are not
        // touched until the call returns (inline data is copied during it);
        // (2) every SGE lies inside a registered, validated local range whose
        // MemoryRegion is kept alive in `in_flight` until completion.
        let rc = unsafe { ibv_post_send(self.qp.qp, self.wrs.as_mut_ptr(), &mut bad) };
        if rc != 0 {
            let source = io::Error::from_raw_os_error(rc.abs());
            if rc.abs() == libc::ENOMEM {
                return Err(Error::QueueFull {
                    outstanding: self.outstanding,
                    max: WR_OUTSTANDING_MAX,
                });
            }
            return Err(Error::Post {
                node: self.peer,
                source,
            });
        }
        self.in_flight
            .extend(batch.iter().map(|op| op.local().clone()));
        self.outstanding += count;
        self.signaled += 1;
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        if self.broken {
            return Err(Error::EndpointBroken { node: self.peer });
        }
        // The clock is read only once the completion is late: in a VM whose
        // clocksource is the HPET, Instant::now() is a system call costing
        // about a microsecond, a large share of a soft-RoCE round trip.
        let mut start: Option<Instant> = None;
        // One completion per poll, into uninitialised memory: zeroing a
        // 16-entry array on every wait cost about a microsecond under
        // emulation, and a wait usually reaps one signaled completion.
        let mut slot = std::mem::MaybeUninit::<ibv_wc>::uninit();
        let mut spins = 0u32;
        while self.signaled > 0 {
            // SAFETY: the CQ is live and `slot` has room for one entry.
            let polled = unsafe { ibv_poll_cq(self.cq.cq, 1, slot.as_mut_ptr()) };
            if polled < 0 {
                self.broken = true;
                return Err(Error::Post {
                    node: self.peer,
                    source: io::Error::other("ibv_poll_cq failed"),
                });
            }
            if polled == 1 {
                // SAFETY: ibv_poll_cq wrote one whole entry.
                let completion = unsafe { slot.assume_init_ref() };
                if completion.status != 0 {
                    // The QP is in the error state now; what is still posted
                    // gets flushed. Keep `in_flight` until the endpoint goes.
                    self.broken = true;
                    return Err(Error::Completion {
                        node: self.peer,
                        status: CompletionStatus(completion.status),
                        vendor_err: completion.vendor_err,
                    });
                }
                self.signaled -= 1;
            }
            if polled == 0 {
                // Nothing completed yet: the thread's other transactions
                // run meanwhile (see `crate::pause`).
                crate::pause::pause(spins);
                spins += 1;
                if spins.is_multiple_of(4096) {
                    self.qp.device.replenish()?;
                }
                if spins.is_multiple_of(1024)
                    && start.get_or_insert_with(Instant::now).elapsed() >= timeout
                {
                    self.broken = true;
                    return Err(Error::Timeout {
                        node: self.peer,
                        waited: start.map(|s| s.elapsed()).unwrap_or_default(),
                        outstanding: self.outstanding,
                    });
                }
            }
        }
        self.outstanding = 0;
        self.in_flight.clear();
        Ok(())
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }

    fn remote_regions(&mut self) -> Result<Vec<RemoteRegion>> {
        self.refresh_regions()?;
        Ok(self.remote.clone())
    }
}
