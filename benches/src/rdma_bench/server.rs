//! The server (node 1): it owns the memory the client's requests target,
//! sleeps until the client sends a command, plays the WRITE ping-pong, and
//! exits when the client says it is done.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdma_transport::{Endpoint, Op, RemoteAddr};

use super::client::{wait_for_word, Patience};
use super::control::{
    Command, Request, ACK_OFFSET, COMMAND_OFFSET, CONTROL_BYTES, CONTROL_OFFSET,
    LANDING_AREA_OFFSET, LOCAL_AREA_OFFSET,
};
use super::node::{fabric_error, BenchNode, OP_TIMEOUT};
use crate::error::{Error, Result};

/// How long one sleep for a notification lasts before the idle limit is
/// checked again.
const NOTIFY_WAIT: Duration = Duration::from_millis(500);
/// How long connecting back to the client may take.
const CONNECT_BACK_TIMEOUT: Duration = Duration::from_secs(20);

/// The server's way back to its client.
struct Peer {
    endpoint: Box<dyn Endpoint>,
    buffer: RemoteAddr,
}

/// Serves one client until it sends `Done`; fails if no command arrives
/// for `idle_timeout` (the client died).
pub fn serve(node: BenchNode, idle_timeout: Duration, progress: bool) -> Result<()> {
    let mut peer: Option<Peer> = None;
    let mut handled = 0u64;
    let mut last_command = Instant::now();
    loop {
        let notified = node
            .fabric()
            .wait_notified(NOTIFY_WAIT)
            .map_err(fabric_error("waiting for the client's command"))?;
        if notified == 0 {
            if last_command.elapsed() >= idle_timeout {
                return Err(Error::Timeout {
                    what: "waiting for the client's next command".to_string(),
                    waited: last_command.elapsed(),
                });
            }
            continue;
        }
        // A notification means the command it carried has fully landed; the
        // client sends the next only after our answer, so at most one is
        // new.
        let mut bytes = [0u8; CONTROL_BYTES];
        node.mr
            .read(CONTROL_OFFSET, &mut bytes)
            .expect("the control block lies inside the buffer");
        let command = Command::decode(&bytes)?;
        if command.sequence == handled {
            continue;
        }
        if command.sequence != handled + 1 {
            return Err(Error::Protocol(format!(
                "command {} after command {handled}",
                command.sequence
            )));
        }
        handled = command.sequence;
        last_command = Instant::now();
        let request = command.request()?;
        if progress {
            eprintln!("rdma-bench server: {request:?}");
        }
        match request {
            Request::Hello {
                node: client,
                address,
            } => {
                if let Some(address) = address {
                    node.set_peer(client, address);
                }
                let mut endpoint = node.connect(client, CONNECT_BACK_TIMEOUT)?;
                let buffer = node.find_peer_buffer(endpoint.as_mut(), CONNECT_BACK_TIMEOUT)?;
                let peer = peer.insert(Peer { endpoint, buffer });
                answer(&node, peer, handled)?;
            }
            Request::PingPong { bytes, rounds } => {
                let peer = peer
                    .as_mut()
                    .ok_or_else(|| Error::Protocol("ping-pong before hello".to_string()))?;
                // Clear the landing slot before answering: the client's first
                // WRITE may arrive right after the answer.
                node.mr
                    .write(LANDING_AREA_OFFSET, &vec![0u8; bytes as usize])
                    .expect("slot inside the buffer");
                answer(&node, peer, handled)?;
                ping_pong(&node, peer, bytes, rounds)?;
            }
            Request::Done => {
                if let Some(peer) = peer.as_mut() {
                    answer(&node, peer, handled)?;
                }
                return Ok(());
            }
        }
    }
}

/// Writes `sequence` into the client's ack word.
fn answer(node: &BenchNode, peer: &mut Peer, sequence: u64) -> Result<()> {
    // Relaxed: the post below orders it before the fabric reads it.
    node.word(COMMAND_OFFSET).store(sequence, Ordering::Relaxed);
    let write = Op::Write {
        local: node.slice(COMMAND_OFFSET, 8),
        remote: peer.buffer.offset_by(ACK_OFFSET),
    };
    peer.endpoint
        .execute(&[write], OP_TIMEOUT)
        .map_err(fabric_error("answering the client"))
}

/// The server's half of `ib_write_lat`: wait for round `r` to land in our
/// memory, WRITE round `r` back, wait for that WRITE's completion.
fn ping_pong(node: &BenchNode, peer: &mut Peer, bytes: u32, rounds: u64) -> Result<()> {
    let last_word = u64::from(bytes) - 8;
    let landing = node.word(LANDING_AREA_OFFSET + last_word);
    let source = node.word(LOCAL_AREA_OFFSET + last_word);
    let write = [Op::Write {
        local: node.slice(LOCAL_AREA_OFFSET, bytes),
        remote: peer.buffer.offset_by(LANDING_AREA_OFFSET),
    }];
    for round in 1..=rounds {
        wait_for_word(
            landing,
            round,
            OP_TIMEOUT,
            Patience::Spin,
            "the client's ping-pong WRITE",
        )?;
        // Relaxed: as in `answer`.
        source.store(round, Ordering::Relaxed);
        peer.endpoint
            .execute(&write, OP_TIMEOUT)
            .map_err(fabric_error("ping-pong WRITE"))?;
    }
    Ok(())
}
