//! A node's server: polls the node's incoming rings, hands every record
//! to the participant ([`crate::participant`]), carries out what it asks
//! (retire records, answer LOCKs with one WRITE), tells senders how far it
//! retired, and, when the node goes quiet, sends the truncations its
//! transactions queued ([`crate::coordinator::send_truncations`]).
//!
//! The server thread polls, spinning briefly and then blocking on the
//! fabric's doorbell, so an idle node burns no CPU. Application threads of
//! the node may run the same poll (see [`crate::node::inbox`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdma_transport::{Endpoint, MemoryRegion, NodeId, Op, RemoteAddr};

use crate::codec::inbox::{head_offset, reply_offset, LockReply};
use crate::coordinator::send_truncations;
use crate::error::{Error, Result};
use crate::limits::{RECORD_BYTES_MAX, REPLY_TIMEOUT_MS, RING_BYTES};
use crate::node::contexts::{connect_all, Links};
use crate::node::inbox::InboxPoller;
use crate::node::{NodeShared, View};
use crate::participant::{Env, Incoming, Mode, Participant};
use crate::ring::{Polled, RingReceiver};
use crate::txn_id::TxnId;

/// How long an idle server thread naps while application threads poll.
const POLLER_NAP_US: u64 = 100;

/// Empty passes over the rings before the server thread goes idle.
const IDLE_SPINS: u32 = 64;

/// The first wait on the doorbell after the server went idle, in
/// milliseconds; each wait that ends with nothing arrived doubles it, up to
/// [`IDLE_WAIT_MS_MAX`]. The wait bounds how late a record written without
/// a notification (a COMMIT-BACKUP) is seen on an otherwise quiet node.
const IDLE_WAIT_MS_MIN: u64 = 2;
/// The longest wait on the doorbell. A fixed 2 ms wait woke idle nodes 500
/// times a second, each wake a pass over every ring (and, over verbs, a
/// poll of the receive CQ). With it and the membership agent's 2 ms
/// control listener (the larger share), an idle verbs node in the
/// soft-RoCE VM used 10.5–11% of a CPU; with both fixed, 2–4%
/// (`soft-roce-setup/vm/idle-cluster.sh`).
const IDLE_WAIT_MS_MAX: u64 = 64;

/// Scratch layout of the server: one 8-byte staging word per node for
/// ring heads, then one per node for LOCK answers.
const WORD_BYTES: u64 = std::mem::size_of::<u64>() as u64;

fn head_staging(sender: usize) -> u64 {
    sender as u64 * WORD_BYTES
}

fn reply_staging(coordinator: usize) -> u64 {
    (crate::limits::NODES_MAX + coordinator) as u64 * WORD_BYTES
}

/// The server's state.
pub(crate) struct Server {
    node: Arc<NodeShared>,
    /// The view and its serial when the server last looked.
    view: Arc<View>,
    view_serial: u64,
    receivers: Vec<RingReceiver>,
    participant: Participant,
    endpoints: Vec<Box<dyn Endpoint>>,
    scratch: Arc<MemoryRegion>,
    /// Receive buffer of the record being handled, and the buffer of
    /// outgoing TRUNCATE records: reused.
    buffer: Vec<u8>,
    record: Vec<u8>,
}

impl InboxPoller for Server {
    fn poll_once(&mut self) -> Result<usize> {
        Server::poll_once(self)
    }

    fn poll_sender(&mut self, sender: usize) -> Result<usize> {
        Server::poll_sender(self, sender)
    }
}

impl Server {
    /// The server of `node`, taking its rings from the persisted retired
    /// positions.
    pub(crate) fn new(node: Arc<NodeShared>) -> Result<Server> {
        let nodes = node.nodes;
        let view_serial = node.view_serial();
        let view = node.view();
        let receivers = (0..nodes)
            .map(|sender| RingReceiver::new(sender, node.inbox.clone()))
            .collect();
        let Links { endpoints, scratch } = connect_all(node.fabric.as_ref(), nodes)?;
        Ok(Server {
            participant: Participant::new(Mode::Serve, view.config.id),
            view,
            view_serial,
            node,
            receivers,
            endpoints,
            scratch,
            buffer: Vec::with_capacity(RECORD_BYTES_MAX),
            record: Vec::with_capacity(RECORD_BYTES_MAX),
        })
    }

    /// The server thread: polls and processes until the node stops.
    pub(crate) fn run(server: Arc<Mutex<Server>>) {
        let node = server.lock().expect("server lock").node.clone();
        let mut idle_rounds = 0u32;
        // Consecutive doorbell waits that ended with nothing new.
        let mut empty_waits = 0u32;
        while !node.stop.load(Ordering::Acquire) {
            let worked = {
                let mut server = server.lock().expect("server lock");
                match server.poll_once() {
                    Ok(worked) => worked,
                    Err(error) => {
                        eprintln!("farm node {}: server error: {error}", node.id);
                        1
                    }
                }
            };
            if worked > 0 {
                idle_rounds = 0;
                empty_waits = 0;
                let _ = node.fabric.progress();
                continue;
            }
            idle_rounds += 1;
            if idle_rounds < IDLE_SPINS {
                // Yield, not spin: on a host with fewer cores than threads
                // an idle server that spins keeps a core from the client
                // threads that have work (and, in process, process the
                // LOCKs themselves). Measured against the spinning build
                // (82f2bd8), median of 3 interleaved `farm bench
                // --duration 5` runs: TATP 765K -> 875K tx/s, p99 63-68
                // -> 12.4-12.9 us; `--processes` 642-667K -> 850-853K.
                std::thread::yield_now();
                continue;
            }
            // Idle: tell senders what we retired, then sleep until a
            // WriteNotify rings the doorbell (or a little while passes, so
            // records written without a notification are seen too).
            server.lock().expect("server lock").on_idle();
            if node.hook.has_pollers() {
                // Application threads poll between transactions: look again
                // soon, in case they all stay busy, without being woken.
                // (On verbs, notifications still consume receives: keep
                // them posted.)
                let _ = node.fabric.progress();
                std::thread::sleep(Duration::from_micros(POLLER_NAP_US));
            } else {
                let wait = (IDLE_WAIT_MS_MIN << empty_waits.min(8)).min(IDLE_WAIT_MS_MAX);
                match node.fabric.wait_notified(Duration::from_millis(wait)) {
                    // Nothing rang: one pass for records written without a
                    // notification, then wait again, without the spinning
                    // (in the soft-RoCE VM the spins were most of an idle
                    // node's CPU).
                    Ok(0) => {
                        empty_waits += 1;
                        idle_rounds = IDLE_SPINS - 1;
                    }
                    _ => empty_waits = 0,
                }
            }
        }
    }

    /// What the server does when nothing arrived for a while: publish
    /// every ring head, send the truncations transactions queued while the
    /// node then went quiet.
    fn on_idle(&mut self) {
        let id = self.node.id;
        if let Err(error) = self.publish_heads(true, None) {
            eprintln!("farm node {id}: publishing ring heads failed: {error}");
        }
        // While the configuration changes, nothing more goes into rings:
        // recovery settles what the truncations would have.
        if !self.node.truncations.is_empty() && self.node.gate.is_open() {
            if let Err(error) = send_truncations(
                &self.node,
                &self.view,
                &self.scratch,
                &mut self.endpoints,
                &mut self.record,
            ) {
                eprintln!("farm node {id}: sending truncations failed: {error}");
            }
        }
    }

    /// One pass over every ring; returns how many records it processed.
    pub(crate) fn poll_once(&mut self) -> Result<usize> {
        self.refresh_view();
        let mut worked = 0;
        for sender in 0..self.receivers.len() {
            worked += self.poll_ring(sender)?;
        }
        if worked > 0 {
            self.publish_heads(false, None)?;
        }
        Ok(worked)
    }

    /// Processes the records waiting in the ring from `sender` only: what
    /// a coordinator of node `sender` waiting for its LOCK answer runs at
    /// the primary (see [`crate::node::NodeShared::help_node`]), bounded
    /// by its own node's records instead of every ring's.
    ///
    /// # Errors
    /// As [`Server::poll_once`].
    pub(crate) fn poll_sender(&mut self, sender: usize) -> Result<usize> {
        self.refresh_view();
        let worked = self.poll_ring(sender)?;
        if worked > 0 {
            self.publish_heads(false, None)?;
        }
        Ok(worked)
    }

    /// Takes the node's view if it changed since the last pass.
    fn refresh_view(&mut self) {
        let serial = self.node.view_serial();
        if serial != self.view_serial {
            self.view = self.node.view();
            self.view_serial = serial;
            self.participant.set_configuration(self.view.config.id);
        }
    }

    /// Processes every record waiting in the ring from `sender`; returns
    /// how many.
    fn poll_ring(&mut self, sender: usize) -> Result<usize> {
        // A node outside the configuration is not listened to (FaRM
        // SOSP'15 §5.2: "stop talking to non-members").
        if sender >= self.receivers.len() || !self.view.config.is_member(sender) {
            return Ok(0);
        }
        let mut worked = 0;
        loop {
            let mut buffer = std::mem::take(&mut self.buffer);
            let result = match self.receivers[sender].poll(&mut buffer) {
                Ok(Polled::Empty) => {
                    self.buffer = buffer;
                    break;
                }
                Ok(Polled::Record { position, record }) => {
                    let env = Env {
                        replicas: &self.node.replicas,
                        allocators: Some(&self.node.allocators),
                        faults: self.node.faults(),
                        stats: Some(&self.node.stats),
                    };
                    let incoming = Incoming {
                        ring: sender,
                        position,
                        record,
                    };
                    self.participant
                        .step(&env, &incoming)
                        .and_then(|()| self.carry_out())
                }
                Err(error @ Error::Corrupt { .. }) => {
                    self.node
                        .stats
                        .corrupt_records
                        .fetch_add(1, Ordering::Relaxed);
                    eprintln!("farm node {}: {error}", self.node.id);
                    *self.node.last_corruption.lock().expect("corruption lock") =
                        Some(error.to_string());
                    self.buffer = buffer;
                    break;
                }
                Err(error) => Err(error),
            };
            self.buffer = buffer;
            result?;
            worked += 1;
        }
        Ok(worked)
    }

    /// `peer` rejoined as a new incarnation: its ring here starts afresh,
    /// its old transactions are forgotten (all were decided when it was
    /// removed), and the endpoint to it is remade.
    pub(crate) fn admit(&mut self, peer: usize) {
        self.receivers[peer].reset_for_new_sender();
        self.participant.forget_coordinator(peer);
        self.endpoints[peer] = crate::node::contexts::connect_one(self.node.fabric.as_ref(), peer);
    }

    /// Processes every record in the rings until none is left: with every
    /// member fenced, nothing more arrives (FaRM SOSP'15 §5.3 "drain
    /// logs").
    ///
    /// # Errors
    /// As [`Server::poll_once`].
    pub(crate) fn drain(&mut self) -> Result<()> {
        while self.poll_once()? > 0 {}
        Ok(())
    }

    /// The receiving side of every ring that is not fully retired and
    /// published, one line each, for a diagnostic.
    pub(crate) fn describe_rings(&self) -> Vec<String> {
        let stats = &self.node.stats;
        let header = format!(
            "server in configuration {} (node view {}): {} records processed, {} stale, {} COMMIT-BACKUPs truncated, {} truncations queued here",
            self.participant.configuration(),
            self.node.view().config.id,
            stats.records_processed.load(Ordering::Relaxed),
            stats.stale_records.load(Ordering::Relaxed),
            stats.truncated.load(Ordering::Relaxed),
            if self.node.truncations.is_empty() { "no" } else { "some" },
        );
        std::iter::once(header)
            .chain(
                self.receivers
                    .iter()
                    .enumerate()
                    .filter(|(_, receiver)| {
                        receiver.unpublished_bytes() > 0 || receiver.holds_records()
                    })
                    .map(|(sender, receiver)| {
                        let held = self.participant.held_in(sender);
                        format!(
                            "ring from node {sender}: {}; held: {:?}",
                            receiver.describe(),
                            &held[..held.len().min(4)]
                        )
                    }),
            )
            .collect()
    }

    /// The LOCKs and COMMIT-BACKUPs the participant holds.
    pub(crate) fn held(
        &self,
    ) -> (
        Vec<crate::reconfiguration::Held>,
        Vec<crate::reconfiguration::Held>,
    ) {
        self.participant.held()
    }

    /// The transactions recently truncated here.
    pub(crate) fn truncated(&self) -> Vec<TxnId> {
        self.participant.truncated()
    }

    /// Carries out recovery's decisions on what the participant holds (see
    /// [`Participant::settle`]) and retires the settled records.
    ///
    /// # Errors
    /// As [`Participant::settle`].
    pub(crate) fn settle(
        &mut self,
        committed: &std::collections::HashSet<TxnId>,
        next: &crate::config::Configuration,
    ) -> Result<()> {
        let env = Env {
            replicas: &self.node.replicas,
            allocators: Some(&self.node.allocators),
            faults: self.node.faults(),
            stats: Some(&self.node.stats),
        };
        self.participant.settle(&env, committed)?;
        for &(ring, position) in &self.participant.effects().retire {
            self.receivers[ring].retire(position);
        }
        // Not to the nodes the change removes: they are dead (over verbs a
        // WRITE to one takes the QP's retries, about half a second, to fail).
        self.publish_heads(true, Some(next))
    }

    /// Carries out what the participant's last handler asked for.
    fn carry_out(&mut self) -> Result<()> {
        let effects = self.participant.effects();
        for &(ring, position) in &effects.retire {
            self.receivers[ring].retire(position);
        }
        if let Some((coordinator, txid, granted)) = effects.reply {
            match self.reply(coordinator, txid, granted) {
                // Draining for a configuration change: the coordinator may
                // be the node that failed, and its commit is recovery's to
                // decide now.
                Err(_) if !self.node.gate.is_open() => {}
                result => result?,
            }
        }
        Ok(())
    }

    /// Tells senders how far we retired: always when `idle`, otherwise only
    /// rings that retired a good share since the last time.
    fn publish_heads(
        &mut self,
        idle: bool,
        next: Option<&crate::config::Configuration>,
    ) -> Result<()> {
        for sender in 0..self.receivers.len() {
            let receiver = &mut self.receivers[sender];
            if !idle && receiver.unpublished_bytes() < RING_BYTES / 8 {
                continue;
            }
            if !self.view.config.is_member(sender) || next.is_some_and(|c| !c.is_member(sender)) {
                continue;
            }
            let Some(head) = receiver.take_publishable() else {
                continue;
            };
            let staging = head_staging(sender);
            self.scratch.write(staging, &head.to_le_bytes())?;
            let op = Op::Write {
                local: self.scratch.slice(staging, WORD_BYTES as u32)?,
                remote: RemoteAddr {
                    node: NodeId(sender as u16),
                    key: self.view.inbox_key(sender),
                    offset: head_offset(self.node.id),
                },
            };
            let result =
                self.endpoints[sender].execute(&[op], Duration::from_millis(REPLY_TIMEOUT_MS));
            if result.is_err() {
                self.receivers[sender].publish_failed();
            }
            match result {
                // Draining for a configuration change: the sender may be
                // the node that failed.
                Err(_) if !self.node.gate.is_open() => {}
                result => result?,
            }
        }
        Ok(())
    }

    /// Answers a LOCK: one 8-byte WRITE into the coordinator's inbox.
    fn reply(&mut self, coordinator: usize, txid: TxnId, granted: bool) -> Result<()> {
        let staging = reply_staging(coordinator);
        self.scratch.write(
            staging,
            &LockReply::for_txn(txid, granted).encode().to_le_bytes(),
        )?;
        let op = Op::Write {
            local: self.scratch.slice(staging, WORD_BYTES as u32)?,
            remote: RemoteAddr {
                node: NodeId(coordinator as u16),
                key: self.view.inbox_key(coordinator),
                offset: reply_offset(txid.context(), self.node.id),
            },
        };
        self.endpoints[coordinator].execute(&[op], Duration::from_millis(REPLY_TIMEOUT_MS))?;
        Ok(())
    }
}
