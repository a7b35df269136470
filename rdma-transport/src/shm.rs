//! The shared-memory fabric: nodes on one host, as threads of one process or
//! as separate processes, reach each other's registered memory through
//! mappings of the same files. No hardware, no kernel support needed.
//!
//! A cluster lives in a directory that every node can open:
//!
//! ```text
//! <dir>/node-<id>/alive          flock(LOCK_EX) held by the live node
//! <dir>/node-<id>/doorbell       futex words that WriteNotify rings
//! <dir>/node-<id>/mr-<key>.meta  one per registration with remote access
//! <dir>/node-<id>/mr-<key>.data  the memory of anonymous registrations
//! ```
//!
//! A `.meta` file is published by rename once complete, so a peer never
//! sees a half-written one. It holds (all little-endian u64):
//!
//! ```text
//! 0       8       16      24       32         40
//! | magic | state | len   | access | path len | path of the memory file ...
//! ```
//!
//! `state` is 1 while registered and 0 once deregistered; peers check it on
//! every operation, as a NIC checks an rkey.
//!
//! Operations run on the caller's thread at `post`: READ and WRITE are word
//! by word atomic copies ([`crate::copy`]), so a READ that races a WRITE can
//! return a torn copy exactly as on hardware; compare-and-swap and
//! fetch-and-add are atomics on the mapping. A peer whose process died is
//! noticed through its `alive` lock within [`SHM_LIVENESS_CHECK_MS`].

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::access::Access;
use crate::copy::copy_shared;
use crate::error::{Error, Result};
use crate::fabric::{Endpoint, Fabric, FabricKind};
use crate::limits::{BATCH_WR_COUNT_MAX, SHM_LIVENESS_CHECK_MS};
use crate::mr::{map_file, Backing, Mapping, MemoryRegion, Registration};
use crate::op::{NodeId, Op, RemoteRegion};

const META_MAGIC: u64 = u64::from_le_bytes(*b"FARMSHM1");
const META_BYTES: usize = 4096;
const META_HEADER_BYTES: usize = 40;
const STATE_VALID: u64 = 1;
const STATE_DEREGISTERED: u64 = 0;
const DOORBELL_BYTES: usize = 64;

/// Where a node of an shm cluster keeps its files.
#[derive(Clone, Debug)]
pub struct ShmConfig {
    /// The cluster directory, the same for every node.
    pub dir: PathBuf,
    pub node: NodeId,
}

pub struct ShmFabric {
    node: Arc<ShmNode>,
}

struct ShmNode {
    id: NodeId,
    cluster_dir: PathBuf,
    dir: PathBuf,
    /// Held with an exclusive flock for the node's lifetime; its release
    /// (also by the kernel, when the process dies) tells peers we are gone.
    _alive: File,
    doorbell: MmapRaw,
    next_key: AtomicU32,
    notifications_seen: Mutex<u32>,
}

fn node_dir(cluster_dir: &Path, node: NodeId) -> PathBuf {
    cluster_dir.join(format!("node-{}", node.0))
}

fn file_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::File {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl ShmFabric {
    /// Joins the cluster in `config.dir` as `config.node`. Fails if a live
    /// process already is that node.
    pub fn open(config: ShmConfig) -> Result<ShmFabric> {
        let dir = node_dir(&config.dir, config.node);
        std::fs::create_dir_all(&dir).map_err(file_error("create", &dir))?;
        let alive_path = dir.join("alive");
        let alive = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&alive_path)
            .map_err(file_error("open", &alive_path))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(alive.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::InvalidArgument(format!(
                "node {} is already running in {}",
                config.node,
                config.dir.display()
            )));
        }
        // Registrations of an earlier incarnation of this node are stale:
        // its memory was deregistered when that process ended.
        for entry in std::fs::read_dir(&dir).map_err(file_error("list", &dir))? {
            let path = entry.map_err(file_error("list", &dir))?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mr-"))
            {
                std::fs::remove_file(&path).map_err(file_error("remove", &path))?;
            }
        }
        let doorbell_path = dir.join("doorbell");
        let doorbell = map_file(&doorbell_path, DOORBELL_BYTES as u64)?;
        Ok(ShmFabric {
            node: Arc::new(ShmNode {
                id: config.node,
                cluster_dir: config.dir,
                dir,
                _alive: alive,
                notifications_seen: Mutex::new(doorbell_words(&doorbell).0.load(Ordering::SeqCst)),
                doorbell,
                next_key: AtomicU32::new(1),
            }),
        })
    }
}

/// The sequence and waiter-count words of a doorbell mapping.
fn doorbell_words(map: &MmapRaw) -> (&AtomicU32, &AtomicU32) {
    assert!(map.len() >= DOORBELL_BYTES);
    // SAFETY: (1) the mapping is page-aligned and at least DOORBELL_BYTES
    // long (asserted); (2) every process touches these words only through
    // atomics; (3) the references live no longer than `map`.
    unsafe {
        let base = map.as_mut_ptr();
        (
            &*(base as *const AtomicU32),
            &*(base.add(4) as *const AtomicU32),
        )
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let spec = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the call; FUTEX_WAIT (not
    // the private variant) because other processes share the mapping. The
    // result is ignored: a spurious return is handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &spec as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; waking has no memory effects.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Milliseconds of CLOCK_MONOTONIC_COARSE: a clock tick's resolution (a few
/// ms), enough for the liveness interval, and read without the TSC: every
/// post reads it, and `Instant::now()` there was 2.5% of TATP's CPU.
fn coarse_now_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// Rings a doorbell: the Release half of `wait_notified`'s Acquire, so the
/// data written before is visible to the woken node.
fn ring(map: &MmapRaw) {
    let (sequence, waiters) = doorbell_words(map);
    // SeqCst on both words on both sides (Dekker): either the waiter sees the
    // new sequence, or we see its registration as a waiter and wake it.
    sequence.fetch_add(1, Ordering::SeqCst);
    if waiters.load(Ordering::SeqCst) > 0 {
        futex_wake_all(sequence);
    }
}

struct ShmRegistration {
    meta: Option<(MmapRaw, PathBuf)>,
    scratch_file: Option<PathBuf>,
}

impl Registration for ShmRegistration {}

impl Drop for ShmRegistration {
    fn drop(&mut self) {
        if let Some((meta, path)) = &self.meta {
            meta_state(meta).store(STATE_DEREGISTERED, Ordering::Release);
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = &self.scratch_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a registration's `.meta` file says: its state, length, access and
/// the file that holds its memory. The decoder takes bytes a peer wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub valid: bool,
    pub len: u64,
    pub access: Access,
    pub path: PathBuf,
}

impl Meta {
    /// The bytes of a `.meta` file (header, then the path).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a path longer than the file holds.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let path_bytes = self.path.as_os_str().as_encoded_bytes();
        if path_bytes.len() > META_BYTES - META_HEADER_BYTES {
            return Err(Error::InvalidArgument(format!(
                "path too long: {}",
                self.path.display()
            )));
        }
        let state = if self.valid {
            STATE_VALID
        } else {
            STATE_DEREGISTERED
        };
        let mut bytes = Vec::with_capacity(META_HEADER_BYTES + path_bytes.len());
        for word in [
            META_MAGIC,
            state,
            self.len,
            u64::from(self.access.bits()),
            path_bytes.len() as u64,
        ] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(path_bytes);
        Ok(bytes)
    }

    /// Decodes the first bytes of a `.meta` file.
    ///
    /// # Errors
    /// What is wrong with them, in words.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Meta, &'static str> {
        use std::os::unix::ffi::OsStrExt;
        let header = bytes
            .get(..META_HEADER_BYTES)
            .ok_or("shorter than a meta header")?;
        let word = |index: usize| {
            u64::from_le_bytes(
                header[index * 8..index * 8 + 8]
                    .try_into()
                    .expect("8 bytes"),
            )
        };
        if word(0) != META_MAGIC {
            return Err("not a meta file");
        }
        let valid = match word(1) {
            STATE_VALID => true,
            STATE_DEREGISTERED => false,
            _ => return Err("unknown state"),
        };
        let access = u8::try_from(word(3))
            .ok()
            .and_then(Access::from_bits)
            .ok_or("unknown access bits")?;
        let path_len = usize::try_from(word(4))
            .ok()
            .filter(|len| *len <= META_BYTES - META_HEADER_BYTES)
            .ok_or("path length out of range")?;
        let path = bytes
            .get(META_HEADER_BYTES..META_HEADER_BYTES + path_len)
            .ok_or("shorter than its path")?;
        Ok(Meta {
            valid,
            len: word(2),
            access,
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        })
    }
}

fn meta_state(map: &MmapRaw) -> &AtomicU64 {
    assert!(map.len() >= META_BYTES);
    // SAFETY: the state word is at offset 8 of a page-aligned mapping of
    // META_BYTES, accessed by every process only atomically; the reference
    // lives no longer than `map`.
    unsafe { &*(map.as_mut_ptr().add(8) as *const AtomicU64) }
}

impl Fabric for ShmFabric {
    fn node(&self) -> NodeId {
        self.node.id
    }

    fn kind(&self) -> FabricKind {
        FabricKind::Shm
    }

    fn register(&self, backing: Backing, access: Access) -> Result<Arc<MemoryRegion>> {
        let key = self.node.next_key.fetch_add(1, Ordering::Relaxed);
        let mut scratch_file = None;
        // Peers can map only files, so anonymous memory with remote access
        // becomes a file of the node's directory.
        let backing = match backing {
            Backing::Anonymous { len } if access.is_remote() => {
                let path = self.node.dir.join(format!("mr-{key}.data"));
                let _ = std::fs::remove_file(&path);
                scratch_file = Some(path.clone());
                Backing::File { path, len }
            }
            other => other,
        };
        let mapping = Mapping::new(&backing)?;
        let mut meta = None;
        if access.is_remote() {
            let path = mapping.path.clone().expect("remote memory is file-backed");
            meta = Some(self.publish_meta(key, &path, mapping.len, access)?);
        }
        Ok(Arc::new(MemoryRegion::new(
            mapping,
            access,
            (key, key),
            Box::new(ShmRegistration { meta, scratch_file }),
        )))
    }

    fn connect(&self, peer: NodeId) -> Result<Box<dyn Endpoint>> {
        let dir = node_dir(&self.node.cluster_dir, peer);
        let alive_path = dir.join("alive");
        let alive = File::open(&alive_path).map_err(|_| Error::PeerUnreachable { node: peer })?;
        let doorbell_path = dir.join("doorbell");
        let doorbell_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&doorbell_path)
            .map_err(|_| Error::PeerUnreachable { node: peer })?;
        let doorbell = MmapOptions::new()
            .len(DOORBELL_BYTES)
            .map_raw(&doorbell_file)
            .map_err(|source| Error::Map {
                len: DOORBELL_BYTES as u64,
                source,
            })?;
        let mut endpoint = ShmEndpoint {
            peer,
            dir,
            alive,
            liveness_checked_ms: coarse_now_ms(),
            doorbell,
            remote: Vec::new(),
            broken: false,
        };
        endpoint.check_alive()?;
        Ok(Box::new(endpoint))
    }

    fn notification_counter(&self) -> Option<u64> {
        let (sequence, _) = doorbell_words(&self.node.doorbell);
        // Acquire: a reader that sees the new count sees the record that
        // the notifying WRITE carried (the ringer's SeqCst add follows it).
        Some(u64::from(sequence.load(Ordering::Acquire)))
    }

    fn wait_notified(&self, timeout: Duration) -> Result<u64> {
        let (sequence, waiters) = doorbell_words(&self.node.doorbell);
        let mut seen = self
            .node
            .notifications_seen
            .lock()
            .expect("doorbell lock poisoned");
        let deadline = Instant::now() + timeout;
        loop {
            let now = sequence.load(Ordering::SeqCst);
            if now != *seen {
                let count = now.wrapping_sub(*seen);
                *seen = now;
                return Ok(u64::from(count));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            waiters.fetch_add(1, Ordering::SeqCst);
            if sequence.load(Ordering::SeqCst) == *seen {
                futex_wait(sequence, *seen, left);
            }
            waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl ShmFabric {
    fn publish_meta(
        &self,
        key: u32,
        path: &Path,
        len: u64,
        access: Access,
    ) -> Result<(MmapRaw, PathBuf)> {
        let bytes = Meta {
            valid: true,
            len,
            access,
            path: path.to_path_buf(),
        }
        .encode()?;
        let final_path = self.node.dir.join(format!("mr-{key}.meta"));
        let temporary = self.node.dir.join(format!("mr-{key}.meta.tmp"));
        let _ = std::fs::remove_file(&temporary);
        let map = map_file(&temporary, META_BYTES as u64)?;
        // SAFETY: the fresh mapping is META_BYTES long and nobody else has
        // the temporary file yet; `bytes` fits it (checked by `encode`).
        unsafe { copy_shared(bytes.as_ptr(), map.as_mut_ptr(), bytes.len()) };
        map.flush().map_err(file_error("flush", &temporary))?;
        std::fs::rename(&temporary, &final_path).map_err(file_error("publish", &final_path))?;
        Ok((map, final_path))
    }
}

/// A peer's registration as this endpoint mapped it.
struct RemoteMapping {
    key: u32,
    meta: MmapRaw,
    data: MmapRaw,
    len: u64,
    access: Access,
}

pub struct ShmEndpoint {
    peer: NodeId,
    dir: PathBuf,
    alive: File,
    /// When the peer's liveness was last checked ([`coarse_now_ms`]).
    liveness_checked_ms: u64,
    doorbell: MmapRaw,
    remote: Vec<RemoteMapping>,
    broken: bool,
}

impl ShmEndpoint {
    fn check_alive(&mut self) -> Result<()> {
        // SAFETY: flock on a descriptor we own. A shared lock succeeds only
        // while nobody holds the node's exclusive lock, i.e. it is dead.
        let taken =
            unsafe { libc::flock(self.alive.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        self.liveness_checked_ms = coarse_now_ms();
        if taken {
            // SAFETY: as above.
            unsafe { libc::flock(self.alive.as_raw_fd(), libc::LOCK_UN) };
            self.broken = true;
            return Err(Error::PeerUnreachable { node: self.peer });
        }
        Ok(())
    }

    /// Finds (mapping on first use) the peer's registration `key`.
    fn lookup(&mut self, key: u32) -> Result<usize> {
        if let Some(index) = self.remote.iter().position(|mapping| mapping.key == key) {
            if meta_state(&self.remote[index].meta).load(Ordering::Acquire) == STATE_VALID {
                return Ok(index);
            }
            self.remote.swap_remove(index);
        }
        let unknown = Error::UnknownRemoteKey {
            node: self.peer,
            key,
        };
        let meta_path = self.dir.join(format!("mr-{key}.meta"));
        let Ok(meta_file) = File::open(&meta_path) else {
            return Err(unknown);
        };
        // Mapped memory past a file's end is SIGBUS when touched: a file
        // shorter than it says is an error here, not a crash later.
        if meta_file
            .metadata()
            .map_or(true, |m| m.len() < META_BYTES as u64)
        {
            return Err(unknown);
        }
        let meta = MmapOptions::new()
            .len(META_BYTES)
            .map_raw_read_only(&meta_file)
            .map_err(|_| Error::UnknownRemoteKey {
                node: self.peer,
                key,
            })?;
        let mut bytes = vec![0u8; META_BYTES];
        // SAFETY: the mapping is META_BYTES long; `bytes` is ours and as
        // long.
        unsafe { copy_shared(meta.as_mut_ptr(), bytes.as_mut_ptr(), META_BYTES) };
        let Ok(Meta {
            valid: true,
            len,
            access,
            path,
        }) = Meta::decode(&bytes)
        else {
            return Err(unknown);
        };
        let data_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(file_error("open peer memory", &path))?;
        let file_len = data_file
            .metadata()
            .map_err(file_error("read the size of peer memory", &path))?
            .len();
        if file_len < len {
            return Err(Error::File {
                what: "map peer memory",
                path: path.clone(),
                source: std::io::Error::other(format!(
                    "its registration says {len} bytes, the file holds {file_len}"
                )),
            });
        }
        let data = MmapOptions::new()
            .len(len as usize)
            .map_raw(&data_file)
            .map_err(|source| Error::Map { len, source })?;
        self.remote.push(RemoteMapping {
            key,
            meta,
            data,
            len,
            access,
        });
        Ok(self.remote.len() - 1)
    }

    fn validate(&mut self, op: &Op) -> Result<usize> {
        let index = self.lookup(op.remote().key)?;
        let mapping = &self.remote[index];
        op.validate(
            self.peer,
            &RemoteRegion {
                key: mapping.key,
                addr: 0,
                len: mapping.len,
                access: mapping.access,
            },
        )?;
        Ok(index)
    }
}

impl Endpoint for ShmEndpoint {
    fn peer(&self) -> NodeId {
        self.peer
    }

    fn post(&mut self, batch: &[Op]) -> Result<()> {
        if self.broken {
            return Err(Error::EndpointBroken { node: self.peer });
        }
        if batch.len() > BATCH_WR_COUNT_MAX {
            return Err(Error::BatchTooLarge {
                count: batch.len(),
                max: BATCH_WR_COUNT_MAX,
            });
        }
        if coarse_now_ms().saturating_sub(self.liveness_checked_ms) >= SHM_LIVENESS_CHECK_MS {
            self.check_alive()?;
        }
        // Validate the whole batch before running any of it, as the verbs
        // backend does before posting.
        let mut targets = [0usize; BATCH_WR_COUNT_MAX];
        for (slot, op) in targets.iter_mut().zip(batch) {
            *slot = self.validate(op)?;
        }
        for (op, index) in batch.iter().zip(targets) {
            let mapping = &self.remote[index];
            let local = op.local();
            let remote = op.remote();
            // SAFETY: (all pointer arithmetic below) `validate` checked both
            // ranges against their live mappings, which this endpoint and
            // the slice's Arc keep alive for the duration of the copy.
            let remote_ptr = unsafe { mapping.data.as_mut_ptr().add(remote.offset as usize) };
            // SAFETY: as above.
            let local_ptr = unsafe { local.mr.as_ptr().add(local.offset as usize) };
            let len = local.len as usize;
            match op {
                // SAFETY: as above; ranges of distinct mappings may alias
                // only if a node addresses itself, which copy_shared allows
                // as long as the ranges do not overlap.
                Op::Read { .. } => unsafe { copy_shared(remote_ptr, local_ptr, len) },
                // SAFETY: as above.
                Op::Write { .. } => unsafe { copy_shared(local_ptr, remote_ptr, len) },
                Op::WriteNotify { .. } => {
                    // SAFETY: as above.
                    unsafe { copy_shared(local_ptr, remote_ptr, len) };
                    ring(&self.doorbell);
                }
                Op::CompareSwap { expected, swap, .. } => {
                    // SAFETY: 8 bytes, 8-aligned (validated), atomics only.
                    let word = unsafe { &*(remote_ptr as *const AtomicU64) };
                    let old = match word.compare_exchange(
                        *expected,
                        *swap,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(old) | Err(old) => old,
                    };
                    local
                        .mr
                        .atomic_u64(local.offset)?
                        .store(old, Ordering::Release);
                }
                Op::FetchAdd { add, .. } => {
                    // SAFETY: as for CompareSwap.
                    let word = unsafe { &*(remote_ptr as *const AtomicU64) };
                    let old = word.fetch_add(*add, Ordering::AcqRel);
                    local
                        .mr
                        .atomic_u64(local.offset)?
                        .store(old, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    fn wait(&mut self, _timeout: Duration) -> Result<()> {
        // Everything completed inside `post`.
        if self.broken {
            return Err(Error::EndpointBroken { node: self.peer });
        }
        Ok(())
    }

    fn outstanding(&self) -> usize {
        0
    }

    fn remote_regions(&mut self) -> Result<Vec<RemoteRegion>> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(file_error("list", &self.dir))? {
            let name = entry.map_err(file_error("list", &self.dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(key) = name
                .strip_prefix("mr-")
                .and_then(|n| n.strip_suffix(".meta"))
            {
                if let Ok(key) = key.parse::<u32>() {
                    keys.push(key);
                }
            }
        }
        keys.sort_unstable();
        let mut regions = Vec::new();
        for key in keys {
            // A registration can go away between the listing and the lookup.
            if let Ok(index) = self.lookup(key) {
                let mapping = &self.remote[index];
                regions.push(RemoteRegion {
                    key,
                    addr: 0,
                    len: mapping.len,
                    access: mapping.access,
                });
            }
        }
        Ok(regions)
    }
}
