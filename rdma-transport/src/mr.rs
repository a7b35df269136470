//! Registered memory.
//!
//! A [`MemoryRegion`] is a mapping (anonymous, or of a file so that it
//! survives the process, as FaRM's non-volatile memory does) plus the
//! backend's registration of it. The local CPU reaches it only through
//! [`MemoryRegion::read`], [`MemoryRegion::write`] and
//! [`MemoryRegion::atomic_u64`], never through a `&mut [u8]`: peers write into
//! registered memory whenever they like, so a Rust reference to it would be a
//! data race.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};

use crate::access::Access;
use crate::copy::copy_shared;
use crate::error::{Error, Result};
use crate::limits::MR_BYTES_MAX;

/// What memory to register.
#[derive(Clone, Debug)]
pub enum Backing {
    /// Fresh zeroed memory that dies with the process.
    Anonymous { len: u64 },
    /// A file, created (zero-filled) if missing. An existing file must have
    /// exactly `len` bytes: a size mismatch is an error, never a silent
    /// truncation of someone's data.
    File { path: PathBuf, len: u64 },
}

impl Backing {
    pub fn len(&self) -> u64 {
        match self {
            Backing::Anonymous { len } | Backing::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A mapping of a backing, before registration.
pub(crate) struct Mapping {
    pub(crate) map: MmapRaw,
    pub(crate) len: u64,
    pub(crate) path: Option<PathBuf>,
}

impl Mapping {
    pub(crate) fn new(backing: &Backing) -> Result<Mapping> {
        let len = backing.len();
        if len == 0 || len > MR_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "a registration needs 1 to {MR_BYTES_MAX} bytes, got {len}"
            )));
        }
        match backing {
            Backing::Anonymous { len } => {
                let map = MmapOptions::new()
                    .len(*len as usize)
                    .map_anon()
                    .map_err(|source| Error::Map { len: *len, source })?;
                Ok(Mapping {
                    map: MmapRaw::from(map),
                    len: *len,
                    path: None,
                })
            }
            Backing::File { path, len } => {
                let map = map_file(path, *len)?;
                let path = std::fs::canonicalize(path).map_err(|source| Error::File {
                    what: "resolve",
                    path: path.clone(),
                    source,
                })?;
                Ok(Mapping {
                    map,
                    len: *len,
                    path: Some(path),
                })
            }
        }
    }
}

/// Maps `path` read-write, creating it with `len` zero bytes if missing.
pub(crate) fn map_file(path: &Path, len: u64) -> Result<MmapRaw> {
    let file_error = |what, source| Error::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| file_error("open", e))?;
    let size = file.metadata().map_err(|e| file_error("stat", e))?.len();
    if size == 0 {
        file.set_len(len).map_err(|e| file_error("size", e))?;
    } else if size != len {
        return Err(Error::InvalidArgument(format!(
            "{} has {size} bytes, expected {len}",
            path.display()
        )));
    }
    MmapOptions::new()
        .len(len as usize)
        .map_raw(&file)
        .map_err(|source| Error::Map { len, source })
}

/// A backend's registration of a mapping; dropping it deregisters.
pub(crate) trait Registration: Send + Sync {}

/// Registered memory. Dropping it deregisters it (peers that still address
/// it get [`Error::UnknownRemoteKey`] or a remote access error) and unmaps it.
pub struct MemoryRegion {
    // Field order is drop order: deregister before unmapping.
    _registration: Box<dyn Registration>,
    mapping: Mapping,
    access: Access,
    lkey: u32,
    rkey: u32,
}

impl MemoryRegion {
    pub(crate) fn new(
        mapping: Mapping,
        access: Access,
        keys: (u32, u32),
        registration: Box<dyn Registration>,
    ) -> MemoryRegion {
        MemoryRegion {
            _registration: registration,
            mapping,
            access,
            lkey: keys.0,
            rkey: keys.1,
        }
    }

    pub fn len(&self) -> u64 {
        self.mapping.len
    }

    pub fn is_empty(&self) -> bool {
        self.mapping.len == 0
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// The key peers put in a [`crate::RemoteAddr`] to address this memory.
    pub fn rkey(&self) -> u32 {
        self.rkey
    }

    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// The backing file, for file-backed memory.
    pub fn path(&self) -> Option<&Path> {
        self.mapping.path.as_deref()
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.mapping.map.as_mut_ptr()
    }

    fn check(&self, offset: u64, len: usize) -> Result<()> {
        let len = len as u64;
        if offset.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(Error::LocalOutOfRange {
                offset,
                len,
                region_len: self.len(),
            });
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes at `offset` out of the region. Each aligned
    /// 8-byte word is read atomically, nothing larger is (see [`crate::copy`]).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: (1) the range was bounds-checked against the live mapping;
        // (2) `buf` is a distinct, exclusively borrowed allocation.
        unsafe {
            copy_shared(
                self.as_ptr().add(offset as usize),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the region at `offset`, word by word in increasing
    /// address order.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: as in `read`, with the roles of the ranges swapped.
        unsafe {
            copy_shared(
                data.as_ptr(),
                self.as_ptr().add(offset as usize),
                data.len(),
            )
        };
        Ok(())
    }

    /// The 8-byte word at `offset` as an atomic, for lock words and counters.
    pub fn atomic_u64(&self, offset: u64) -> Result<&AtomicU64> {
        self.check(offset, 8)?;
        if !offset.is_multiple_of(8) {
            return Err(Error::Misaligned {
                offset,
                local_offset: offset,
            });
        }
        // SAFETY: (1) in bounds and 8-aligned (the mapping is page-aligned);
        // (2) all other access to registered memory is atomic or through
        // `copy_shared`, which is atomic per word; (3) the reference lives no
        // longer than `self`, which keeps the mapping.
        Ok(unsafe { &*(self.as_ptr().add(offset as usize) as *const AtomicU64) })
    }

    /// Writes dirty pages of a file-backed region to its file.
    pub fn flush(&self) -> Result<()> {
        self.mapping.map.flush().map_err(|source| Error::File {
            what: "flush",
            path: self.mapping.path.clone().unwrap_or_default(),
            source,
        })
    }

    /// A slice for a work request.
    pub fn slice(
        self: &std::sync::Arc<Self>,
        offset: u64,
        len: u32,
    ) -> Result<crate::op::LocalSlice> {
        self.check(offset, len as usize)?;
        Ok(crate::op::LocalSlice {
            mr: self.clone(),
            offset,
            len,
        })
    }
}

impl std::fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("len", &self.len())
            .field("access", &self.access)
            .field("lkey", &self.lkey)
            .field("rkey", &self.rkey)
            .field("path", &self.mapping.path)
            .finish()
    }
}
