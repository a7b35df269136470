//! Every byte layout of the engine, one module per format: what crosses
//! the fabric, and what lives in a region or ring file. Each format is a
//! set of `#[repr(C)]` types with compile-time size and offset checks, a
//! byte diagram, and an encode / decode pair; decoders take untrusted
//! bytes and return a [`DecodeError`], never panic.
//!
//! | module | format |
//! | --- | --- |
//! | [`record`] | ring records: header, trailer, LOCK / COMMIT-BACKUP entries, TRUNCATE lists |
//! | [`object`] | an object's slot: header word, size, payload, footer |
//! | [`region`] | a region file's header and slab table |
//! | [`inbox`] | a node's inbox registration: ring heads, retired positions, LOCK answers, rings |
//!
//! The 64-bit words packed inside these (object [`crate::Header`],
//! [`crate::Addr`], [`crate::TxnId`]) are newtypes of their own modules.
//! Every multi-byte field is little-endian (the fabric's hosts are).

pub mod inbox;
pub mod object;
pub mod record;
pub mod region;

/// Why bytes could not be decoded. The bytes came from a peer or a file,
/// so this is an ordinary error, never a panic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{what}: {needed} bytes needed, {available} available")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("{what}: {left} bytes left over")]
    TrailingBytes { what: &'static str, left: usize },
    #[error("{what}: magic {found:#x} is not this format's")]
    BadMagic { what: &'static str, found: u64 },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("{what}: length {len} out of range ({why})")]
    BadLength {
        what: &'static str,
        len: u64,
        why: &'static str,
    },
    #[error("{what}: reserved bits set")]
    ReservedBits { what: &'static str },
    #[error(
        "record trailer tag {found:#x} does not match its ring position (expected {expected:#x})"
    )]
    TagMismatch { expected: u32, found: u32 },
    #[error("record checksum {found:#x} does not match its bytes ({expected:#x})")]
    ChecksumMismatch { expected: u32, found: u32 },
    #[error("{what}: {why}")]
    Invalid {
        what: &'static str,
        why: &'static str,
    },
}

/// Reads one `T` at the start of `bytes`, or says how short they are.
pub(crate) fn read_pod<T: bytemuck::Pod>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    let needed = std::mem::size_of::<T>();
    match bytes.get(..needed) {
        Some(head) => Ok(bytemuck::pod_read_unaligned(head)),
        None => Err(DecodeError::Truncated {
            what,
            needed,
            available: bytes.len(),
        }),
    }
}
