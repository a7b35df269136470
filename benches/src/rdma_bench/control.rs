//! The benchmark buffer's layout and the control protocol between the client
//! (node 0) and the server (node 1).
//!
//! Each node registers one buffer of [`BUFFER_BYTES`] with every access:
//!
//! ```text
//! 0         64        128      4096          +256 KiB        +256 KiB        +256 KiB
//! | control | command | unused | local slots | landing slots | pattern slots |
//! ```
//!
//! * local slots: the source or target of this node's own requests;
//! * landing slots: where the peer's WRITEs and atomics land; the WRITE
//!   ping-pong polls the last word of landing slot 0;
//! * pattern slots: filled with [`pattern_byte`] when the buffer is made and
//!   never written again, so that READs can be checked.
//!
//! The client sends a request by WRITE_WITH_IMM ([`rdma_transport::Op::WriteNotify`])
//! of one [`Command`] from its `command` block into the server's `control`
//! block, which wakes the server from [`rdma_transport::Fabric::wait_notified`]
//! (so an idle server sleeps instead of spinning on a core the client needs).
//! The server answers by WRITEing the command's sequence number into the
//! first word of the client's `control` block, the ack word, which the client
//! polls. One command is outstanding at a time.
//!
//! A [`Command`] (all little-endian):
//!
//! ```text
//! 0          8      16      24       32                 48     50     52         56      64
//! | sequence | kind | bytes | rounds | address (16 B)   | port | node | reserved | magic |
//! ```
//!
//! `address` is an IPv6 address (IPv4 as `::ffff:a.b.c.d`). The `magic` word
//! of a node's own control block is written when its buffer is made, which
//! is how a peer tells the benchmark buffer from other registrations.

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use rdma_transport::NodeId;

use crate::error::{Error, Result};

/// The largest request the benchmark issues, and the size of a slot.
pub const SLOT_BYTES: u64 = 4096;
/// Slots per area: the most requests one throughput window may hold.
pub const SLOT_COUNT: u64 = 64;
pub const CONTROL_OFFSET: u64 = 0;
pub const CONTROL_BYTES: usize = 64;
/// The client's ack word, in its control block.
pub const ACK_OFFSET: u64 = CONTROL_OFFSET;
/// Where the client builds a command before sending it.
pub const COMMAND_OFFSET: u64 = 64;
pub const LOCAL_AREA_OFFSET: u64 = 4096;
pub const LANDING_AREA_OFFSET: u64 = LOCAL_AREA_OFFSET + SLOT_COUNT * SLOT_BYTES;
pub const PATTERN_AREA_OFFSET: u64 = LANDING_AREA_OFFSET + SLOT_COUNT * SLOT_BYTES;
pub const BUFFER_BYTES: u64 = PATTERN_AREA_OFFSET + SLOT_COUNT * SLOT_BYTES;

pub const MAGIC: u64 = u64::from_le_bytes(*b"FARMBNCH");
pub const MAGIC_OFFSET: u64 = CONTROL_OFFSET + offset_of!(Command, magic) as u64;

const _: () = assert!(COMMAND_OFFSET >= CONTROL_OFFSET + CONTROL_BYTES as u64);
const _: () = assert!(COMMAND_OFFSET + CONTROL_BYTES as u64 <= LOCAL_AREA_OFFSET);
const _: () = assert!(SLOT_BYTES.is_power_of_two() && LOCAL_AREA_OFFSET & (SLOT_BYTES - 1) == 0);
const _: () = assert!(SLOT_COUNT as usize <= rdma_transport::limits::WR_OUTSTANDING_MAX);

/// The byte at `offset` of the pattern area.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(7).wrapping_add(3) % 251) as u8
}

/// What the client asks of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// "I am `node`; connect back to me (at `address`, on verbs)." The
    /// server needs its own endpoint to the client for the WRITE ping-pong
    /// and for its answers.
    Hello {
        node: NodeId,
        address: Option<SocketAddr>,
    },
    /// Play `rounds` rounds of WRITE ping-pong of `bytes` each.
    PingPong { bytes: u32, rounds: u64 },
    /// The client is done: answer, then exit.
    Done,
}

const KIND_HELLO: u64 = 1;
const KIND_PING_PONG: u64 = 2;
const KIND_DONE: u64 = 3;

/// The wire form of a [`Request`]; see the module docs for the diagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    pub sequence: u64,
    pub kind: u64,
    pub bytes: u64,
    pub rounds: u64,
    pub address: [u8; 16],
    pub port: u16,
    pub node: u16,
    pub reserved: u32,
    pub magic: u64,
}

const _: () = assert!(size_of::<Command>() == CONTROL_BYTES);
const _: () = assert!(offset_of!(Command, sequence) == 0);
const _: () = assert!(offset_of!(Command, kind) == 8);
const _: () = assert!(offset_of!(Command, bytes) == 16);
const _: () = assert!(offset_of!(Command, rounds) == 24);
const _: () = assert!(offset_of!(Command, address) == 32);
const _: () = assert!(offset_of!(Command, port) == 48);
const _: () = assert!(offset_of!(Command, node) == 50);
const _: () = assert!(offset_of!(Command, reserved) == 52);
const _: () = assert!(offset_of!(Command, magic) == 56);

impl Command {
    pub fn new(sequence: u64, request: Request) -> Command {
        assert!(sequence > 0, "sequence 0 is the ack word's initial value");
        let mut command = Command {
            sequence,
            kind: 0,
            bytes: 0,
            rounds: 0,
            address: [0; 16],
            port: 0,
            node: 0,
            reserved: 0,
            magic: MAGIC,
        };
        match request {
            Request::Hello { node, address } => {
                command.kind = KIND_HELLO;
                command.node = node.0;
                if let Some(address) = address {
                    command.address = match address.ip() {
                        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                        IpAddr::V6(ip) => ip.octets(),
                    };
                    command.port = address.port();
                    assert!(command.port != 0, "a Hello names a listening port");
                }
            }
            Request::PingPong { bytes, rounds } => {
                assert!((8..=SLOT_BYTES as u32).contains(&bytes) && bytes & 7 == 0);
                command.kind = KIND_PING_PONG;
                command.bytes = u64::from(bytes);
                command.rounds = rounds;
            }
            Request::Done => command.kind = KIND_DONE,
        }
        command
    }

    pub fn encode(&self) -> [u8; CONTROL_BYTES] {
        let mut bytes = [0u8; CONTROL_BYTES];
        let mut put = |offset: usize, value: &[u8]| {
            bytes[offset..offset + value.len()].copy_from_slice(value);
        };
        put(offset_of!(Command, sequence), &self.sequence.to_le_bytes());
        put(offset_of!(Command, kind), &self.kind.to_le_bytes());
        put(offset_of!(Command, bytes), &self.bytes.to_le_bytes());
        put(offset_of!(Command, rounds), &self.rounds.to_le_bytes());
        put(offset_of!(Command, address), &self.address);
        put(offset_of!(Command, port), &self.port.to_le_bytes());
        put(offset_of!(Command, node), &self.node.to_le_bytes());
        put(offset_of!(Command, reserved), &self.reserved.to_le_bytes());
        put(offset_of!(Command, magic), &self.magic.to_le_bytes());
        bytes
    }

    /// Decodes bytes a peer wrote; anything malformed is an error, never a
    /// guess.
    pub fn decode(bytes: &[u8; CONTROL_BYTES]) -> Result<Command> {
        fn field<const N: usize>(bytes: &[u8; CONTROL_BYTES], offset: usize) -> [u8; N] {
            bytes[offset..offset + N]
                .try_into()
                .expect("field inside the block")
        }
        let command = Command {
            sequence: u64::from_le_bytes(field(bytes, offset_of!(Command, sequence))),
            kind: u64::from_le_bytes(field(bytes, offset_of!(Command, kind))),
            bytes: u64::from_le_bytes(field(bytes, offset_of!(Command, bytes))),
            rounds: u64::from_le_bytes(field(bytes, offset_of!(Command, rounds))),
            address: field(bytes, offset_of!(Command, address)),
            port: u16::from_le_bytes(field(bytes, offset_of!(Command, port))),
            node: u16::from_le_bytes(field(bytes, offset_of!(Command, node))),
            reserved: u32::from_le_bytes(field(bytes, offset_of!(Command, reserved))),
            magic: u64::from_le_bytes(field(bytes, offset_of!(Command, magic))),
        };
        if command.magic != MAGIC {
            return Err(Error::Protocol(format!(
                "control block has magic {:#x}, expected {MAGIC:#x}",
                command.magic
            )));
        }
        command.request()?;
        Ok(command)
    }

    pub fn request(&self) -> Result<Request> {
        match self.kind {
            KIND_HELLO => Ok(Request::Hello {
                node: NodeId(self.node),
                address: (self.port != 0).then(|| {
                    let ip = Ipv6Addr::from(self.address);
                    let ip = match ip.to_ipv4_mapped() {
                        Some(ip) => IpAddr::V4(ip),
                        None => IpAddr::V6(ip),
                    };
                    SocketAddr::new(ip, self.port)
                }),
            }),
            KIND_PING_PONG => {
                let bytes = u32::try_from(self.bytes)
                    .ok()
                    .filter(|bytes| (8..=SLOT_BYTES as u32).contains(bytes) && bytes & 7 == 0)
                    .ok_or_else(|| Error::Protocol(format!("ping-pong of {} bytes", self.bytes)))?;
                Ok(Request::PingPong {
                    bytes,
                    rounds: self.rounds,
                })
            }
            KIND_DONE => Ok(Request::Done),
            kind => Err(Error::Protocol(format!("unknown command kind {kind}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let requests = [
            Request::Hello {
                node: NodeId(0),
                address: None,
            },
            Request::Hello {
                node: NodeId(7),
                address: Some("10.99.0.1:18515".parse().unwrap()),
            },
            Request::Hello {
                node: NodeId(0),
                address: Some("[fe80::1]:4791".parse().unwrap()),
            },
            Request::PingPong {
                bytes: 8,
                rounds: 5500,
            },
            Request::PingPong {
                bytes: 4096,
                rounds: u64::MAX,
            },
            Request::Done,
        ];
        for (index, request) in requests.into_iter().enumerate() {
            let command = Command::new(index as u64 + 1, request);
            let decoded = Command::decode(&command.encode()).unwrap();
            assert_eq!(decoded, command);
            assert_eq!(decoded.request().unwrap(), request);
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let mut bytes = Command::new(1, Request::Done).encode();
        bytes[56] ^= 1;
        assert!(matches!(Command::decode(&bytes), Err(Error::Protocol(_))));
        let mut bytes = Command::new(1, Request::Done).encode();
        bytes[8] = 9;
        assert!(matches!(Command::decode(&bytes), Err(Error::Protocol(_))));
        let mut bytes = Command::new(
            1,
            Request::PingPong {
                bytes: 8,
                rounds: 1,
            },
        )
        .encode();
        bytes[16..24].copy_from_slice(&12u64.to_le_bytes());
        assert!(matches!(Command::decode(&bytes), Err(Error::Protocol(_))));
        assert!(matches!(
            Command::decode(&[0u8; CONTROL_BYTES]),
            Err(Error::Protocol(_))
        ));
    }
}
