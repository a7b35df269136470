//! The client (node 0): it issues every measured request; the server only
//! answers the WRITE ping-pong.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdma_transport::{Endpoint, Op, RemoteAddr};

use super::clock::Clock;
use super::control::{
    pattern_byte, Command, Request, ACK_OFFSET, COMMAND_OFFSET, CONTROL_BYTES, CONTROL_OFFSET,
    LANDING_AREA_OFFSET, LOCAL_AREA_OFFSET, PATTERN_AREA_OFFSET, SLOT_BYTES,
};
use super::node::{fabric_error, BenchNode, OP_TIMEOUT};
use super::report::LatencyRecorder;
use super::{OpKind, CLIENT_NODE, SERVER_NODE};
use crate::error::{Error, Result};

/// How long the server may take to answer a command (a Hello makes it
/// connect back, which takes a while on soft-RoCE under emulation).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How a thread waits for a word of its own memory to change.
#[derive(Clone, Copy)]
pub enum Patience {
    /// Busy-poll, as perftest does in its latency loops.
    Spin,
    /// Poll and yield, for waits where the peer may need this core.
    Yield,
}

/// Polls `word` until it holds `expected`: how a node learns that a peer's
/// WRITE has landed.
pub fn wait_for_word(
    word: &AtomicU64,
    expected: u64,
    timeout: Duration,
    patience: Patience,
    what: &str,
) -> Result<()> {
    // The clock is read only once the wait has lasted a few thousand polls:
    // `Instant::now` may be a system call (see [`super::clock`]), and most
    // waits here are shorter than one.
    let mut started: Option<Instant> = None;
    let mut polls = 0u32;
    loop {
        // Acquire pairs with the peer's WRITE (the NIC's placement, or the
        // Release stores of the shm fabric's copy): the words written before
        // the polled last word are visible once it is.
        if word.load(Ordering::Acquire) == expected {
            return Ok(());
        }
        polls = polls.wrapping_add(1);
        if polls & 4095 == 0 {
            let started = *started.get_or_insert_with(Instant::now);
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("waiting for {what}"),
                    waited: started.elapsed(),
                });
            }
        }
        match patience {
            Patience::Spin => std::hint::spin_loop(),
            Patience::Yield => std::thread::yield_now(),
        }
    }
}

/// Times `warmup + iterations` rounds the way perftest does: a timestamp
/// before each round's post, one after the last round; a sample is the gap
/// between consecutive timestamps. Samples of the warm-up rounds are
/// dropped.
fn time_rounds(
    clock: &Clock,
    warmup: u64,
    iterations: u64,
    mut round: impl FnMut(u64) -> Result<()>,
) -> Result<LatencyRecorder> {
    assert!(iterations > 0);
    let mut recorder = LatencyRecorder::new();
    let mut posted = clock.now();
    for index in 0..warmup + iterations {
        let now = clock.now();
        if index > warmup {
            recorder.record(clock.between(posted, now));
        }
        posted = now;
        round(index)?;
    }
    recorder.record(clock.between(posted, clock.now()));
    debug_assert_eq!(recorder.count(), iterations);
    Ok(recorder)
}

/// What the throughput phase measured.
pub struct Throughput {
    pub requests: u64,
    pub elapsed: Duration,
}

/// The shape of the throughput phase's window.
#[derive(Clone, Copy)]
pub struct Window {
    /// Requests per `post` (one chain, only the last signaled).
    pub batch_requests: usize,
    /// Batches posted back to back before one `wait` drains them all.
    pub batches: usize,
}

pub struct Client {
    // Field order is drop order: the endpoint before the node's fabric.
    endpoint: Box<dyn Endpoint>,
    node: BenchNode,
    server: RemoteAddr,
    sequence: u64,
    clock: Clock,
}

impl Client {
    /// Connects to the server, finds its buffer and says hello (so that it
    /// connects back).
    /// `address` is where the server can reach this node's handshake
    /// listener (verbs only).
    pub fn start(
        node: BenchNode,
        address: Option<SocketAddr>,
        connect_timeout: Duration,
    ) -> Result<Client> {
        let mut endpoint = node.connect(SERVER_NODE, connect_timeout)?;
        let server = node.find_peer_buffer(endpoint.as_mut(), connect_timeout)?;
        let mut client = Client {
            endpoint,
            node,
            server,
            sequence: 0,
            clock: Clock::calibrate(),
        };
        client.request(Request::Hello {
            node: CLIENT_NODE,
            address,
        })?;
        Ok(client)
    }

    pub fn node(&self) -> &BenchNode {
        &self.node
    }

    /// Sends one command and waits for the server's answer.
    pub fn request(&mut self, request: Request) -> Result<()> {
        self.sequence += 1;
        let command = Command::new(self.sequence, request);
        self.node
            .mr
            .write(COMMAND_OFFSET, &command.encode())
            .expect("the command block lies inside the buffer");
        let send = Op::WriteNotify {
            local: self.node.slice(COMMAND_OFFSET, CONTROL_BYTES as u32),
            remote: self.server.offset_by(CONTROL_OFFSET),
        };
        self.endpoint
            .execute(&[send], OP_TIMEOUT)
            .map_err(fabric_error(format!("sending {request:?}")))?;
        wait_for_word(
            self.node.word(ACK_OFFSET),
            self.sequence,
            COMMAND_TIMEOUT,
            Patience::Yield,
            &format!("the server's answer to {request:?}"),
        )
    }

    /// One (op, size) latency test; the recorder holds round trips (the
    /// WRITE ping-pong's too: halve them when reporting).
    pub fn latency(
        &mut self,
        op: OpKind,
        bytes: u32,
        warmup: u64,
        iterations: u64,
    ) -> Result<LatencyRecorder> {
        match op {
            OpKind::Read => self.read_latency(bytes, warmup, iterations),
            OpKind::Write => self.write_ping_pong(bytes, warmup, iterations),
            OpKind::WriteAck => self.write_ack_latency(bytes, warmup, iterations),
            OpKind::Cas | OpKind::Faa => self.atomic_latency(op, warmup, iterations),
        }
    }

    fn read_latency(
        &mut self,
        bytes: u32,
        warmup: u64,
        iterations: u64,
    ) -> Result<LatencyRecorder> {
        let local_offset = LOCAL_AREA_OFFSET;
        self.node
            .mr
            .write(local_offset, &vec![0u8; bytes as usize])
            .expect("slot inside the buffer");
        let read = [Op::Read {
            local: self.node.slice(local_offset, bytes),
            remote: self.server.offset_by(PATTERN_AREA_OFFSET),
        }];
        let endpoint = &mut self.endpoint;
        let recorder = time_rounds(&self.clock, warmup, iterations, |_| {
            endpoint
                .execute(&read, OP_TIMEOUT)
                .map_err(fabric_error("READ"))
        })?;
        // Check what was read against what the server wrote.
        let mut seen = vec![0u8; bytes as usize];
        self.node
            .mr
            .read(local_offset, &mut seen)
            .expect("slot inside the buffer");
        if let Some(offset) = (0..u64::from(bytes)).find(|&i| seen[i as usize] != pattern_byte(i)) {
            return Err(Error::DataMismatch(format!(
                "READ of {bytes} B returned {:#x} at offset {offset}, the server holds {:#x}",
                seen[offset as usize],
                pattern_byte(offset)
            )));
        }
        Ok(recorder)
    }

    /// One signaled WRITE of `bytes` into the server's landing slot, until
    /// its completion: the responder's acknowledgement, a round trip.
    fn write_ack_latency(
        &mut self,
        bytes: u32,
        warmup: u64,
        iterations: u64,
    ) -> Result<LatencyRecorder> {
        let write = [Op::Write {
            local: self.node.slice(LOCAL_AREA_OFFSET, bytes),
            remote: self.server.offset_by(LANDING_AREA_OFFSET),
        }];
        let endpoint = &mut self.endpoint;
        time_rounds(&self.clock, warmup, iterations, |_| {
            endpoint
                .execute(&write, OP_TIMEOUT)
                .map_err(fabric_error("WRITE"))
        })
    }

    /// `ib_write_lat`'s method: the client WRITEs `bytes` into the server's
    /// landing slot with the round number in the last word, the server polls
    /// its memory for it and WRITEs the same back, the client polls its own
    /// memory. Each side waits for its WRITE's completion before polling, as
    /// perftest does.
    fn write_ping_pong(
        &mut self,
        bytes: u32,
        warmup: u64,
        iterations: u64,
    ) -> Result<LatencyRecorder> {
        let rounds = warmup + iterations;
        let last_word = u64::from(bytes) - 8;
        // The server clears its landing slot before it answers.
        self.request(Request::PingPong { bytes, rounds })?;
        self.node
            .mr
            .write(LANDING_AREA_OFFSET, &vec![0u8; bytes as usize])
            .expect("slot inside the buffer");
        let write = [Op::Write {
            local: self.node.slice(LOCAL_AREA_OFFSET, bytes),
            remote: self.server.offset_by(LANDING_AREA_OFFSET),
        }];
        let source = self.node.word(LOCAL_AREA_OFFSET + last_word);
        let landing = self.node.word(LANDING_AREA_OFFSET + last_word);
        let endpoint = &mut self.endpoint;
        time_rounds(&self.clock, warmup, iterations, |index| {
            let round = index + 1;
            // Relaxed: only this thread and, after the post below, the
            // fabric read it; posting orders it.
            source.store(round, Ordering::Relaxed);
            endpoint
                .execute(&write, OP_TIMEOUT)
                .map_err(fabric_error("ping-pong WRITE"))?;
            wait_for_word(
                landing,
                round,
                OP_TIMEOUT,
                Patience::Spin,
                "the server's ping-pong WRITE",
            )
        })
    }

    /// Compare-and-swap increments (each must succeed) or fetch-and-adds of
    /// one word; every returned old value is checked.
    fn atomic_latency(
        &mut self,
        op: OpKind,
        warmup: u64,
        iterations: u64,
    ) -> Result<LatencyRecorder> {
        let remote = self.server.offset_by(LANDING_AREA_OFFSET);
        let result_offset = LOCAL_AREA_OFFSET;
        let read = [Op::Read {
            local: self.node.slice(result_offset, 8),
            remote,
        }];
        self.endpoint
            .execute(&read, OP_TIMEOUT)
            .map_err(fabric_error("READ before the atomics"))?;
        let result = self.node.word(result_offset);
        // Acquire: the READ's completion was polled in `execute`.
        let mut expected = result.load(Ordering::Acquire);
        let local = self.node.slice(result_offset, 8);
        let endpoint = &mut self.endpoint;
        time_rounds(&self.clock, warmup, iterations, |_| {
            let request = match op {
                OpKind::Cas => Op::CompareSwap {
                    local: local.clone(),
                    remote,
                    expected,
                    swap: expected.wrapping_add(1),
                },
                _ => Op::FetchAdd {
                    local: local.clone(),
                    remote,
                    add: 1,
                },
            };
            endpoint
                .execute(std::slice::from_ref(&request), OP_TIMEOUT)
                .map_err(fabric_error(op.name().to_uppercase()))?;
            let old = result.load(Ordering::Acquire);
            if old != expected {
                return Err(Error::DataMismatch(format!(
                    "{} returned {old}, expected {expected} (nobody else touches the word)",
                    op.name().to_uppercase()
                )));
            }
            expected = expected.wrapping_add(1);
            Ok(())
        })
    }

    /// The throughput phase: windows of `window.batches` batches of
    /// `window.batch_requests` requests, each request on its own slot,
    /// posted back to back and drained by one wait. Warm-up and measured
    /// request counts are rounded up to whole windows.
    pub fn throughput(
        &mut self,
        op: OpKind,
        bytes: u32,
        warmup: u64,
        iterations: u64,
        window: Window,
    ) -> Result<Throughput> {
        let window_requests = window.batch_requests * window.batches;
        let requests: Vec<Op> = (0..window_requests as u64)
            .map(|slot| {
                let local = self
                    .node
                    .slice(LOCAL_AREA_OFFSET + slot * SLOT_BYTES, bytes);
                let landing = self
                    .server
                    .offset_by(LANDING_AREA_OFFSET + slot * SLOT_BYTES);
                match op {
                    OpKind::Read => Op::Read {
                        local,
                        remote: self
                            .server
                            .offset_by(PATTERN_AREA_OFFSET + slot * SLOT_BYTES),
                    },
                    OpKind::Write | OpKind::WriteAck => Op::Write {
                        local,
                        remote: landing,
                    },
                    // The outcome does not matter here, only the traffic.
                    OpKind::Cas => Op::CompareSwap {
                        local,
                        remote: landing,
                        expected: 0,
                        swap: 0,
                    },
                    OpKind::Faa => Op::FetchAdd {
                        local,
                        remote: landing,
                        add: 1,
                    },
                }
            })
            .collect();
        let windows = |count: u64| count.div_ceil(window_requests as u64);
        let endpoint = &mut self.endpoint;
        let mut run = |window_count: u64| -> Result<()> {
            for _ in 0..window_count {
                for batch in requests.chunks(window.batch_requests) {
                    endpoint
                        .post(batch)
                        .map_err(fabric_error(format!("posting a {} batch", op.name())))?;
                }
                endpoint
                    .wait(OP_TIMEOUT)
                    .map_err(fabric_error(format!("draining a {} window", op.name())))?;
            }
            Ok(())
        };
        run(windows(warmup))?;
        let measured_windows = windows(iterations).max(1);
        let start = Instant::now();
        run(measured_windows)?;
        Ok(Throughput {
            requests: measured_windows * window_requests as u64,
            elapsed: start.elapsed(),
        })
    }
}
