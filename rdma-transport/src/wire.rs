//! The out-of-band control channel: messages that two nodes exchange over TCP
//! to connect queue pairs and to learn each other's registrations.
//!
//! Every message is one frame:
//!
//! ```text
//! 0      4        5       6          8            12          12+len      16+len
//! +------+--------+-------+----------+------------+-----------+-----------+
//! | FRMW | version| kind  | reserved | body len   | body      | crc32     |
//! | 4 B  | u8 = 1 | u8    | u16 = 0  | u32 LE     | len bytes | of body   |
//! +------+--------+-------+----------+------------+-----------+-----------+
//! ```
//!
//! A peer that speaks something else (another program on the port, an older
//! farm, a corrupted byte) is told apart by the magic, the version and the
//! checksum and gets a [`WireError`], never a panic or a hang: reads carry a
//! timeout and lengths are bounded before anything is allocated.

use std::io::{Read, Write};

use crate::access::Access;
use crate::limits::{MR_REMOTE_COUNT_MAX, WIRE_MESSAGE_BYTES_MAX};
use crate::op::{NodeId, RemoteRegion};

pub const MAGIC: [u8; 4] = *b"FRMW";
pub const VERSION: u8 = 1;
const HEADER_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("i/o on the control connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer is not a farm node (magic {0:02x?}, expected \"FRMW\")")]
    BadMagic([u8; 4]),
    #[error("peer speaks control protocol version {got}, this build speaks {VERSION}")]
    UnsupportedVersion { got: u8 },
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("message of {0} bytes exceeds the limit of {WIRE_MESSAGE_BYTES_MAX}")]
    TooLong(usize),
    #[error("message body is malformed: {0}")]
    Malformed(&'static str),
    #[error("message checksum mismatch (corrupted in transit)")]
    Checksum,
    #[error("peer refused: {0}")]
    Refused(String),
    #[error("unexpected message {got} (expected {expected})")]
    Unexpected {
        got: &'static str,
        expected: &'static str,
    },
}

/// What one side of a reliable connection tells the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QpInfo {
    pub node: NodeId,
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    pub gid: [u8; 16],
    /// `enum ibv_mtu` of the sender's port.
    pub mtu: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client → server: make a queue pair for me and connect it to this one.
    Connect(QpInfo),
    /// Server → client: here is the queue pair and my registrations.
    Accept {
        qp: QpInfo,
        regions: Vec<RemoteRegion>,
    },
    /// Client → server: what registrations do you have now?
    QueryRegions,
    Regions(Vec<RemoteRegion>),
    /// Either way: I cannot go on, and why.
    Refuse(String),
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Connect(_) => 1,
            Message::Accept { .. } => 2,
            Message::QueryRegions => 3,
            Message::Regions(_) => 4,
            Message::Refuse(_) => 5,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Message::Connect(_) => "Connect",
            Message::Accept { .. } => "Accept",
            Message::QueryRegions => "QueryRegions",
            Message::Regions(_) => "Regions",
            Message::Refuse(_) => "Refuse",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            Message::Connect(qp) => put_qp(&mut body, qp),
            Message::Accept { qp, regions } => {
                put_qp(&mut body, qp);
                put_regions(&mut body, regions);
            }
            Message::QueryRegions => {}
            Message::Regions(regions) => put_regions(&mut body, regions),
            Message::Refuse(text) => {
                let text = &text.as_bytes()[..text.len().min(4096)];
                body.extend_from_slice(&(text.len() as u32).to_le_bytes());
                body.extend_from_slice(text);
            }
        }
        assert!(
            body.len() <= WIRE_MESSAGE_BYTES_MAX,
            "encoder exceeded the wire limit"
        );
        let mut frame = Vec::with_capacity(HEADER_BYTES + body.len() + 4);
        frame.extend_from_slice(&MAGIC);
        frame.push(VERSION);
        frame.push(self.kind());
        frame.extend_from_slice(&0u16.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        frame.extend_from_slice(&crc32(&body).to_le_bytes());
        frame
    }

    /// Decodes one whole frame (header, body, checksum) from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let mut reader = bytes;
        let message = Message::read_from(&mut reader)?;
        if !reader.is_empty() {
            return Err(WireError::Malformed("trailing bytes after the frame"));
        }
        Ok(message)
    }

    pub fn read_from(reader: &mut impl Read) -> Result<Message, WireError> {
        let mut header = [0u8; HEADER_BYTES];
        read_exact(reader, &mut header)?;
        let magic: [u8; 4] = header[0..4].try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        if header[4] != VERSION {
            return Err(WireError::UnsupportedVersion { got: header[4] });
        }
        let kind = header[5];
        if header[6..8] != [0, 0] {
            return Err(WireError::Malformed("reserved header bytes are not zero"));
        }
        let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
        if len > WIRE_MESSAGE_BYTES_MAX {
            return Err(WireError::TooLong(len));
        }
        let mut body = vec![0u8; len + 4];
        read_exact(reader, &mut body)?;
        let crc = u32::from_le_bytes(body[len..].try_into().expect("4 bytes"));
        body.truncate(len);
        if crc32(&body) != crc {
            return Err(WireError::Checksum);
        }
        let mut cursor = Cursor { bytes: &body };
        let message = match kind {
            1 => Message::Connect(cursor.qp()?),
            2 => Message::Accept {
                qp: cursor.qp()?,
                regions: cursor.regions()?,
            },
            3 => Message::QueryRegions,
            4 => Message::Regions(cursor.regions()?),
            5 => {
                let len = cursor.u32()? as usize;
                let text = cursor.take(len)?;
                Message::Refuse(String::from_utf8_lossy(text).into_owned())
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        if !cursor.bytes.is_empty() {
            return Err(WireError::Malformed("trailing bytes in the body"));
        }
        Ok(message)
    }

    pub fn write_to(&self, writer: &mut impl Write) -> Result<(), WireError> {
        writer.write_all(&self.encode())?;
        writer.flush()?;
        Ok(())
    }
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), WireError> {
    reader.read_exact(buf).map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Malformed("connection closed in the middle of a message")
        } else {
            WireError::Io(error)
        }
    })
}

fn put_qp(body: &mut Vec<u8>, qp: &QpInfo) {
    body.extend_from_slice(&qp.node.0.to_le_bytes());
    body.extend_from_slice(&qp.qpn.to_le_bytes());
    body.extend_from_slice(&qp.psn.to_le_bytes());
    body.extend_from_slice(&qp.lid.to_le_bytes());
    body.extend_from_slice(&qp.gid);
    body.push(qp.mtu);
}

fn put_regions(body: &mut Vec<u8>, regions: &[RemoteRegion]) {
    assert!(regions.len() <= MR_REMOTE_COUNT_MAX);
    body.extend_from_slice(&(regions.len() as u32).to_le_bytes());
    for region in regions {
        body.extend_from_slice(&region.key.to_le_bytes());
        body.extend_from_slice(&region.addr.to_le_bytes());
        body.extend_from_slice(&region.len.to_le_bytes());
        body.push(region.access.bits());
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < len {
            return Err(WireError::Malformed("body shorter than its fields"));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn qp(&mut self) -> Result<QpInfo, WireError> {
        Ok(QpInfo {
            node: NodeId(self.u16()?),
            qpn: self.u32()?,
            psn: self.u32()?,
            lid: self.u16()?,
            gid: self.take(16)?.try_into().expect("16 bytes"),
            mtu: self.u8()?,
        })
    }
    fn regions(&mut self) -> Result<Vec<RemoteRegion>, WireError> {
        let count = self.u32()? as usize;
        if count > MR_REMOTE_COUNT_MAX {
            return Err(WireError::Malformed("too many registrations"));
        }
        let mut regions = Vec::with_capacity(count);
        for _ in 0..count {
            regions.push(RemoteRegion {
                key: self.u32()?,
                addr: self.u64()?,
                len: self.u64()?,
                access: Access::from_bits(self.u8()?)
                    .ok_or(WireError::Malformed("unknown access bits"))?,
            });
        }
        Ok(regions)
    }
}

/// CRC-32 (IEEE), bitwise: control messages are small and rare.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let qp = QpInfo {
            node: NodeId(3),
            qpn: 0x11,
            psn: 0xabcdef,
            lid: 0,
            gid: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, 0, 1],
            mtu: 3,
        };
        let regions = vec![RemoteRegion {
            key: 7,
            addr: 0x7f00_0000_1000,
            len: 4096,
            access: Access::REMOTE_READ | Access::REMOTE_WRITE,
        }];
        vec![
            Message::Connect(qp.clone()),
            Message::Accept {
                qp,
                regions: regions.clone(),
            },
            Message::QueryRegions,
            Message::Regions(regions),
            Message::Refuse("no such node".into()),
        ]
    }

    #[test]
    fn round_trip() {
        for message in samples() {
            assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn foreign_and_corrupt_frames_are_errors() {
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(Message::decode(http), Err(WireError::BadMagic(_))));
        let mut frame = Message::QueryRegions.encode();
        frame[4] = 9;
        assert!(matches!(
            Message::decode(&frame),
            Err(WireError::UnsupportedVersion { got: 9 })
        ));
        let mut frame = samples()[1].encode();
        frame[20] ^= 0x40;
        assert!(matches!(Message::decode(&frame), Err(WireError::Checksum)));
        let mut frame = Message::QueryRegions.encode();
        frame[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Message::decode(&frame),
            Err(WireError::TooLong(_))
        ));
    }

    /// Every truncation and every single-byte corruption of every message
    /// decodes to an error or to a well-formed message, never a panic.
    #[test]
    fn decoder_survives_truncation_and_bit_flips() {
        for message in samples() {
            let frame = message.encode();
            for cut in 0..frame.len() {
                assert!(Message::decode(&frame[..cut]).is_err());
            }
            for index in 0..frame.len() {
                for bit in 0..8 {
                    let mut bad = frame.clone();
                    bad[index] ^= 1 << bit;
                    let _ = Message::decode(&bad);
                }
            }
        }
        // Pseudo-random garbage with a valid header: the checksum or the body
        // parser rejects it.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let mut frame = Message::QueryRegions.encode()[..8].to_vec();
            frame[5] = (state % 6) as u8;
            let len = (state >> 8) as usize % 200;
            frame.extend_from_slice(&(len as u32).to_le_bytes());
            let mut body = Vec::new();
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                body.push(state as u8);
            }
            frame.extend_from_slice(&body);
            frame.extend_from_slice(&crc32(&body).to_le_bytes());
            let _ = Message::decode(&frame);
        }
    }
}
