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
/// Every block of the file is reserved first (`posix_fallocate`): a store
/// into a page of a sparse file that the filesystem cannot back kills the
/// process with SIGBUS, so a full filesystem must be found here, as an
/// error, before anything is mapped. (Regression: `farm bench` with its
/// data on a small tmpfs died with "Bus error" and no message.)
///
/// # Errors
/// [`Error::NoSpace`] naming the path, the bytes needed and the bytes
/// free (a file this call created is removed again); [`Error::File`];
/// [`Error::InvalidArgument`] for an existing file of another size.
pub(crate) fn map_file(path: &Path, len: u64) -> Result<MmapRaw> {
    let file_error = |what, source| Error::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    let created = !path.exists();
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
    if let Err(error) = reserve_blocks(&file, path, len) {
        if created {
            let _ = std::fs::remove_file(path);
        }
        return Err(error);
    }
    MmapOptions::new()
        .len(len as usize)
        .map_raw(&file)
        .map_err(|source| Error::Map { len, source })
}

/// Reserves the blocks of `len` bytes of `file` (an already reserved range
/// costs nothing).
fn reserve_blocks(file: &std::fs::File, path: &Path, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(signed_len) = libc::off_t::try_from(len) else {
        return Err(Error::InvalidArgument(format!(
            "{}: {len} bytes is beyond this system's file sizes",
            path.display()
        )));
    };
    // SAFETY: posix_fallocate on a descriptor this function's caller owns
    // for the call's duration; it touches no memory of ours.
    let errno = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, signed_len) };
    match errno {
        0 => Ok(()),
        libc::ENOSPC | libc::EFBIG | libc::EDQUOT => Err(Error::NoSpace {
            path: path.to_path_buf(),
            needed: len,
            available: available_bytes(path),
        }),
        errno => Err(Error::File {
            what: "reserve the blocks of",
            path: path.to_path_buf(),
            source: std::io::Error::from_raw_os_error(errno),
        }),
    }
}

/// Bytes an unprivileged process can still write on `path`'s filesystem
/// (0 when it cannot be asked).
fn available_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: statvfs writes one `struct statvfs` into `stats`, which is
    // that size; `name` is a NUL-terminated path that outlives the call.
    let answer = unsafe { libc::statvfs(name.as_ptr(), stats.as_mut_ptr()) };
    if answer != 0 {
        return 0;
    }
    // SAFETY: statvfs succeeded, so it initialized the whole struct.
    let stats = unsafe { stats.assume_init() };
    stats.f_bavail.saturating_mul(stats.f_frsize)
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

    /// Faults every page of the mapping in, writable, now
    /// (`MADV_POPULATE_WRITE`), so that the first writes into it take no
    /// page faults. RDMA registration pins (and so faults in) the memory of
    /// a verbs region anyway; on shm this gives the same start. Costs about
    /// 15 ms per 64 MiB of a file on ext4 (measured on the 2-vCPU dev
    /// machine), against about 0.4 s of page faults spread over loading
    /// TATP at `--scale 10`.
    ///
    /// A kernel without `MADV_POPULATE_WRITE` (before Linux 5.14) answers
    /// `EINVAL`: then nothing is done and the pages fault in on first use,
    /// as before.
    ///
    /// # Errors
    /// [`Error::Map`] when the kernel cannot back the pages (out of memory,
    /// or the file's blocks could not be read).
    pub fn make_resident(&self) -> Result<()> {
        match self.mapping.map.advise(memmap2::Advice::PopulateWrite) {
            Ok(()) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            Err(source) => Err(Error::Map {
                len: self.mapping.len,
                source,
            }),
        }
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
