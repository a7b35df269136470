//! Membership of a cluster of node processes (FaRM SOSP'15 §5.1–5.2):
//! leases, failure detection, and the configuration manager (CM) that
//! reconfigures around a failed node through the configuration store.
//!
//! Every node runs an [`Agent`] with three threads of its own, apart from
//! the engine's, so that transactions cannot delay them:
//! - **leases** (UDP): every member renews its lease at the CM every fifth
//!   of the lease time, and the CM's grant renews the CM's lease at that
//!   member (FaRM's leases in both directions, in two messages instead of
//!   a three-way handshake);
//! - **control** (TCP): the CM's requests: probe, NEW-CONFIG (fence),
//!   report, apply (decisions), NEW-CONFIG-COMMIT (resume);
//! - **monitor**: the CM suspects a member whose lease expired; a member
//!   suspects the CM when its grants stop, and the first surviving member
//!   (by id) then takes over as CM.
//!
//! A reconfiguration (at the CM): suspect, probe the other members (go on
//! only with a majority of the old configuration), compare-and-swap the
//! next configuration into the store (a surviving backup becomes primary
//! of each region the failed node was primary of), NEW-CONFIG to every
//! member (each closes its gate and stops its commits), drain and report,
//! decide ([`farm_core::reconfiguration::decide`]), apply, NEW-CONFIG-COMMIT.
//! The store makes two would-be CMs agree: only one CAS from c to c + 1
//! succeeds.
//!
//! The embedded store ([`FileStore`]) is a file in the cluster's data
//! directory, changed under an exclusive `flock`: it serves node processes
//! on one host. The ZooKeeper store
//! ([`ZooKeeperStore`](crate::zookeeper::ZooKeeperStore)) serves node
//! processes on several hosts; the cluster file's `config_store` chooses.
//! Both also hold where each agent listens ([`ConfigStore::put_contact`]).
//!
//! A killed node that restarts rejoins ([`request_admission`],
//! [`confirm_admission`], and the CM's side in `admit_joiner`): it comes
//! back as a new member with fresh memory and takes back the regions it
//! held (re-replication onto it, while the members are paused, not in the
//! background as FaRM §5.4 paces it). Re-replication onto other live
//! nodes is not built (see the README).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use farm_core::config::Configuration;
use farm_core::reconfiguration::{decide, Decisions, RecoveryReport};
use farm_core::NodeControl;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where configurations are agreed: read the current one, and replace it
/// by the next only if it is still the one expected.
pub trait ConfigStore: Send + Sync {
    /// The configuration in the store, if any.
    ///
    /// # Errors
    /// The store cannot be read, or holds something else.
    fn load(&self) -> Result<Option<Configuration>>;

    /// Stores `next` if the store holds configuration `expected` (`None`:
    /// holds none); false, and nothing changed, otherwise.
    ///
    /// # Errors
    /// The store cannot be read or written.
    fn compare_and_swap(&self, expected: Option<u32>, next: &Configuration) -> Result<bool>;

    /// Starts the store afresh at `first` (a cluster's start, by node 0
    /// alone): whatever configuration it held is gone.
    ///
    /// # Errors
    /// The store cannot be written, or another process wrote a
    /// configuration between the removal and the write.
    fn reset(&self, first: &Configuration) -> Result<()>;

    /// Publishes where node `node`'s membership agent listens, replacing
    /// what an earlier incarnation published: how a restarted node finds
    /// the configuration manager, whose contact changed with no round to
    /// tell it.
    ///
    /// # Errors
    /// The store cannot be written.
    fn put_contact(&self, node: usize, contact: &Contact) -> Result<()>;

    /// What node `node` published last with [`ConfigStore::put_contact`].
    ///
    /// # Errors
    /// The store cannot be read, or holds something else.
    fn contact(&self, node: usize) -> Result<Option<Contact>>;
}

/// The embedded store: `<dir>/configuration.json`, replaced by rename
/// under an exclusive `flock` of `<dir>/configuration.lock`. Node
/// processes on one host share it through the cluster's data directory.
pub struct FileStore {
    path: PathBuf,
    lock: PathBuf,
}

impl FileStore {
    pub fn new(dir: &std::path::Path) -> FileStore {
        FileStore {
            path: dir.join("configuration.json"),
            lock: dir.join("configuration.lock"),
        }
    }

    fn file_error(&self, what: &'static str, source: std::io::Error) -> Error {
        Error::File {
            what,
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self) -> Result<Option<Configuration>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<Configuration>(&bytes)
                .map_err(|e| Error::peer(self.path.display(), format!("not a configuration: {e}")))
                .and_then(|configuration| {
                    configuration.check().map_err(|e| {
                        Error::peer(self.path.display(), format!("a broken configuration: {e}"))
                    })?;
                    Ok(Some(configuration))
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.file_error("read", e)),
        }
    }
}

impl ConfigStore for FileStore {
    fn load(&self) -> Result<Option<Configuration>> {
        self.read()
    }

    fn put_contact(&self, node: usize, contact: &Contact) -> Result<()> {
        let path = self.path.with_file_name(format!("contact-{node}.json"));
        let temporary = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(contact).expect("a contact serializes");
        let error = |what, source| Error::File {
            what,
            path: path.clone(),
            source,
        };
        std::fs::write(&temporary, bytes).map_err(|e| error("write", e))?;
        std::fs::rename(&temporary, &path).map_err(|e| error("replace", e))
    }

    fn contact(&self, node: usize) -> Result<Option<Contact>> {
        let path = self.path.with_file_name(format!("contact-{node}.json"));
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::peer(path.display(), format!("not a contact: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::File {
                what: "read",
                path,
                source: e,
            }),
        }
    }

    fn compare_and_swap(&self, expected: Option<u32>, next: &Configuration) -> Result<bool> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| self.file_error("open the lock of", e))?;
        // SAFETY: flock on a descriptor we own; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(self.file_error("lock", std::io::Error::last_os_error()));
        }
        if self.read()?.map(|c| c.id) != expected {
            return Ok(false);
        }
        let temporary = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(next).expect("a configuration serializes");
        std::fs::write(&temporary, bytes).map_err(|e| self.file_error("write", e))?;
        std::fs::rename(&temporary, &self.path).map_err(|e| self.file_error("replace", e))?;
        Ok(true)
    }

    fn reset(&self, first: &Configuration) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.file_error("remove", e)),
        }
        if !self.compare_and_swap(None, first)? {
            return Err(Error::peer(
                self.path.display(),
                "another process wrote a configuration while the cluster started",
            ));
        }
        Ok(())
    }
}

/// Where a node's agent listens: leases (UDP) and control (TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub lease: SocketAddr,
    pub control: SocketAddr,
}

/// One step of a reconfiguration, as the CM saw it (milliseconds since the
/// Unix epoch, so that a driver can line it up with its own clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `suspected`, `new-config` (stored), `active` (every member resumed).
    pub what: String,
    pub unix_ms: f64,
    /// The configuration it concerns (the new one, from `new-config` on).
    pub configuration: u32,
    /// The nodes suspected or removed.
    pub nodes: Vec<usize>,
}

/// The CM's requests on the control connection, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Request {
    Probe {
        configuration: u32,
    },
    /// NEW-CONFIG: close the gate, stop commits.
    Fence {
        configuration: u32,
    },
    Report,
    Apply {
        configuration: Configuration,
        decisions: Decisions,
        /// A node rejoining in this configuration (see [`request_admission`]).
        #[serde(default)]
        admit: Option<Admission>,
    },
    /// NEW-CONFIG-COMMIT.
    Resume,
    /// A restarted node asks the CM to take it back (see [`request_admission`]).
    Join(Admission),
    /// The rejoining node serves and holds its copies: the CM resumes
    /// every member.
    Joined,
}

/// What a rejoining node brings: its id, its fresh memory's remote keys,
/// and its agent's sockets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    pub node: usize,
    pub inbox: u32,
    pub regions: Vec<Option<u32>>,
    pub contact: Contact,
}

/// The CM's answer to a join request ([`request_admission`]): the configuration that has the
/// node, every node's remote keys and contacts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Admitted {
    pub configuration: Configuration,
    pub inbox_keys: Vec<u32>,
    pub region_keys: Vec<Vec<Option<u32>>>,
    pub contacts: Vec<Contact>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Answer {
    Ok,
    Report(RecoveryReport),
    Admitted(Admitted),
    Error(String),
}

/// Lease messages: `[kind, from (u16 le), configuration (u32 le), sequence
/// (u32 le)]`; a grant echoes the renewal's sequence.
const RENEW: u8 = 1;
const GRANT: u8 = 2;

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Sockets an agent listens on, bound before the cluster's directory
/// round so that their addresses travel with it.
pub struct Sockets {
    lease: UdpSocket,
    control: TcpListener,
}

impl Sockets {
    /// Binds both on `ip` with ports the system picks.
    ///
    /// # Errors
    /// [`Error::Peer`] when a socket cannot be bound.
    pub fn bind(ip: std::net::IpAddr) -> Result<Sockets> {
        let lease = UdpSocket::bind((ip, 0)).map_err(|e| Error::peer("lease socket", e))?;
        let control = TcpListener::bind((ip, 0)).map_err(|e| Error::peer("control socket", e))?;
        Ok(Sockets { lease, control })
    }

    /// # Errors
    /// [`Error::Peer`] when the system does not say.
    pub fn contact(&self) -> Result<Contact> {
        Ok(Contact {
            lease: self
                .lease
                .local_addr()
                .map_err(|e| Error::peer("lease socket", e))?,
            control: self
                .control
                .local_addr()
                .map_err(|e| Error::peer("control socket", e))?,
        })
    }
}

struct Shared {
    id: usize,
    control: NodeControl,
    store: Arc<dyn ConfigStore>,
    lease: Duration,
    /// Every node's agent's sockets (a rejoined node's replaced at its
    /// admission).
    contacts: Mutex<Vec<Contact>>,
    /// Configuration 1: which regions a rejoining node takes again.
    placement: Configuration,
    /// Held through a whole configuration change (a removal or an
    /// admission), so that two never interleave at one CM.
    changing: Mutex<()>,
    config: Mutex<Configuration>,
    /// The last configuration this node saw become active (NEW-CONFIG-COMMIT):
    /// what the transactions that a change must decide ran in.
    active: Mutex<Configuration>,
    /// A change this node managed was stored but not finished (a member
    /// failed to take NEW-CONFIG, report, apply or resume): the monitor
    /// goes on with it from the store.
    unfinished: AtomicBool,
    /// The CM: when each member last renewed. A member: `[manager]`, when
    /// the CM last granted.
    heard: Mutex<Vec<Instant>>,
    events: Mutex<Vec<Event>>,
    reconfiguring: AtomicBool,
    stop: AtomicBool,
}

/// A node's membership agent; its threads stop when it is dropped.
pub struct Agent {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Where the control listener listens: dropping the agent connects
    /// there once, so that the listener's thread sees the stop flag now.
    control: Option<SocketAddr>,
}

impl Agent {
    /// Starts the agent of node `id` in configuration `config`, with every
    /// node's `contacts`, on `sockets` (see [`Sockets::bind`]); publishes
    /// its contact in the store. `placement` is configuration 1 (which
    /// regions a node that rejoins takes again).
    ///
    /// A node that rejoins starts its agent with the configuration that
    /// admitted it (see [`request_admission`]).
    ///
    /// # Errors
    /// [`Error::Peer`] when a thread or socket cannot be set up.
    pub fn start(
        id: usize,
        control: NodeControl,
        store: Arc<dyn ConfigStore>,
        (config, contacts): (Configuration, Vec<Contact>),
        sockets: Sockets,
        lease: Duration,
        placement: Configuration,
    ) -> Result<Agent> {
        let mine = contacts
            .get(id)
            .copied()
            .ok_or_else(|| Error::peer("membership agent", format!("no contact for node {id}")))?;
        store.put_contact(id, &mine)?;
        let now = Instant::now();
        control.set_managed(true);
        control.set_lease_until(Some(now + lease));
        let shared = Arc::new(Shared {
            id,
            control,
            store,
            lease,
            heard: Mutex::new(vec![now; config.nodes]),
            active: Mutex::new(config.clone()),
            unfinished: AtomicBool::new(false),
            config: Mutex::new(config),
            contacts: Mutex::new(contacts),
            placement,
            changing: Mutex::new(()),
            events: Mutex::new(Vec::new()),
            reconfiguring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("farm-{name}-{id}"))
                .spawn(body)
                .map_err(|e| Error::peer("membership agent", e))
        };
        sockets
            .lease
            .set_read_timeout(Some((lease / 5).max(Duration::from_millis(1))))
            .map_err(|e| Error::peer("lease socket", e))?;
        let s = shared.clone();
        threads.push(spawn(
            "lease",
            Box::new(move || lease_loop(&s, &sockets.lease)),
        )?);
        let control = sockets.control.local_addr().ok();
        let s = shared.clone();
        sockets
            .control
            .set_nonblocking(true)
            .map_err(|e| Error::peer("control socket", e))?;
        threads.push(spawn(
            "control",
            Box::new(move || control_loop(&s, &sockets.control)),
        )?);
        let s = shared.clone();
        threads.push(spawn("monitor", Box::new(move || monitor_loop(&s)))?);
        Ok(Agent {
            shared,
            threads,
            control,
        })
    }

    /// The configuration this node is in.
    pub fn configuration(&self) -> Configuration {
        self.shared.config.lock().expect("config lock").clone()
    }

    /// The reconfigurations this node managed, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.shared.events.lock().expect("events lock").clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(control) = self.control {
            let _ = TcpStream::connect_timeout(&control, Duration::from_millis(100));
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

const LEASE_MESSAGE_BYTES: usize = 11;
/// Renewals whose send time a member remembers, by sequence.
const RENEWALS_REMEMBERED: usize = 64;

fn lease_loop(shared: &Shared, socket: &UdpSocket) {
    let mut next_renewal = Instant::now();
    let mut buffer = [0u8; 16];
    let mut sequence: u32 = 0;
    let mut sent = [None::<Instant>; RENEWALS_REMEMBERED];
    while !shared.stop.load(Ordering::Acquire) {
        let (manager, configuration, member) = {
            let config = shared.config.lock().expect("config lock");
            (config.manager, config.id, config.is_member(shared.id))
        };
        if manager != shared.id && member && Instant::now() >= next_renewal {
            let now = Instant::now();
            next_renewal = now + shared.lease / 5;
            sequence = sequence.wrapping_add(1);
            sent[sequence as usize % RENEWALS_REMEMBERED] = Some(now);
            let mut message = [0u8; LEASE_MESSAGE_BYTES];
            message[0] = RENEW;
            message[1..3].copy_from_slice(&(shared.id as u16).to_le_bytes());
            message[3..7].copy_from_slice(&configuration.to_le_bytes());
            message[7..11].copy_from_slice(&sequence.to_le_bytes());
            let to = shared.contacts.lock().expect("contacts lock")[manager].lease;
            let _ = socket.send_to(&message, to);
        }
        let Ok((len, from)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        if len != LEASE_MESSAGE_BYTES {
            continue;
        }
        let their_sequence = u32::from_le_bytes([buffer[7], buffer[8], buffer[9], buffer[10]]);
        let sender = usize::from(u16::from_le_bytes([buffer[1], buffer[2]]));
        let their = u32::from_le_bytes([buffer[3], buffer[4], buffer[5], buffer[6]]);
        match buffer[0] {
            RENEW if manager == shared.id => {
                let is_member = shared.config.lock().expect("config lock").is_member(sender);
                // A node outside the configuration gets no grant: its lease
                // runs out and it stops.
                if is_member && their == configuration {
                    shared.heard.lock().expect("heard lock")[sender] = Instant::now();
                    let mut grant = buffer;
                    grant[0] = GRANT;
                    grant[1..3].copy_from_slice(&(shared.id as u16).to_le_bytes());
                    let _ = socket.send_to(&grant[..LEASE_MESSAGE_BYTES], from);
                }
            }
            GRANT if sender == manager && their == configuration => {
                shared.heard.lock().expect("heard lock")[manager] = Instant::now();
                // The lease runs from when the renewal left: the CM counts
                // from when it arrived, later, so this node's lease ends
                // first (FaRM SOSP'15 §5.1).
                if let Some(renewed) = sent[their_sequence as usize % RENEWALS_REMEMBERED] {
                    shared.control.set_lease_until(Some(renewed + shared.lease));
                }
            }
            _ => {}
        }
    }
}

/// How long the control listener waits for a connection before it looks
/// at the stop flag again (dropping the agent also wakes it by connecting).
const CONTROL_STOP_POLL: Duration = Duration::from_millis(500);

fn control_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("farm-control-{}", shared.id))
                    .spawn(move || serve_control(&shared, stream));
            }
            // Sleep in poll(2) until a connection arrives, not in a 2 ms
            // loop: that woke an idle node 500 times a second, and three
            // idle verbs nodes in the soft-RoCE VM spent about a tenth of a
            // CPU each on it (`soft-roce-setup/vm/idle-cluster.sh`).
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                wait_readable(listener, CONTROL_STOP_POLL);
            }
            // Out of descriptors, say: try again a little later.
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Blocks until `listener` has a connection to accept or `timeout` passed.
fn wait_readable(listener: &TcpListener, timeout: Duration) {
    let mut poll = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, alive for the call; the descriptor is the
    // listener's, open while `listener` is borrowed.
    unsafe { libc::poll(&mut poll, 1, millis) };
}

fn serve_control(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        let answer = match serde_json::from_str::<Request>(&line) {
            Err(e) => Answer::Error(format!("not a control request: {e}")),
            Ok(Request::Join(admission)) => {
                match admit_joiner(shared, &admission, &mut reader, &mut writer) {
                    Ok(()) => return,
                    Err(error) => {
                        eprintln!(
                            "farm node {}: node {} not admitted: {error}",
                            shared.id, admission.node
                        );
                        Answer::Error(error.to_string())
                    }
                }
            }
            Ok(request) => handle(shared, request),
        };
        line.clear();
        if write_answer(&mut writer, &answer).is_err() {
            return;
        }
    }
}

fn write_answer(writer: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
    let mut text = serde_json::to_string(answer).expect("answers serialize");
    text.push('\n');
    writer.write_all(text.as_bytes())
}

/// The CM's side of a rejoin (FaRM SOSP'15 §5: a restarted machine joins
/// as a new member; §5.4 re-replication): stores the configuration with
/// the node back as a member and as a backup of the regions it held
/// (those still short of copies), drives every member through NEW-CONFIG,
/// report, decide and apply (each resets its rings to and from the node,
/// remakes its endpoints and takes its new keys), answers the node with
/// the configuration and every node's keys and contacts, waits until it
/// serves with its copies made, and resumes every member.
///
/// Unlike FaRM's paced background copy, the copy happens while every
/// member is fenced, so it needs no version guard: the pause is the copy's
/// length (the README gives it). Only the CM admits; a node that is still
/// a member (not removed yet) is refused, and asks again.
fn admit_joiner(
    shared: &Shared,
    joiner: &Admission,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<()> {
    let _changing = shared.changing.lock().expect("change lock");
    let old = shared.config.lock().expect("config lock").clone();
    let refuse = |why: String| {
        Err(Error::peer(
            format!("node {}'s admission", joiner.node),
            why,
        ))
    };
    if old.manager != shared.id {
        return refuse(format!(
            "node {} is not the configuration manager of configuration {}; node {} is",
            shared.id, old.id, old.manager
        ));
    }
    if joiner.node >= old.nodes || joiner.node == shared.id {
        return refuse("it is not another node of the cluster".into());
    }
    if old.is_member(joiner.node) {
        return refuse(format!(
            "it is still a member of configuration {}: it is admitted once it was removed",
            old.id
        ));
    }
    if shared.unfinished.load(Ordering::Acquire) {
        return refuse("a configuration change is being finished".into());
    }
    let asked = Instant::now();
    let base = shared.active.lock().expect("active lock").clone();
    let new = old.with_joined(joiner.node, shared.id, &shared.placement);
    if !shared.store.compare_and_swap(Some(old.id), &new)? {
        return refuse(format!(
            "configuration {} was replaced in the store",
            old.id
        ));
    }
    event(shared, "new-config", new.id, &[]);
    let members = old.members.clone();
    let step = Duration::from_millis(farm_core::limits::RECOVERY_WAIT_MS);
    let installed = install(shared, &members, &base, &new, Some(joiner));
    if let Err(error) = installed {
        shared.unfinished.store(true, Ordering::Release);
        return Err(error);
    }
    let directory = shared.control.directory();
    let contacts = shared.contacts.lock().expect("contacts lock").clone();
    let admitted = Answer::Admitted(Admitted {
        configuration: new.clone(),
        inbox_keys: directory.inbox_keys,
        region_keys: directory.region_keys,
        contacts,
    });
    let started = Instant::now();
    let mut line = String::new();
    let joined = write_answer(writer, &admitted).is_ok()
        && reader.get_ref().set_read_timeout(Some(JOIN_WAIT)).is_ok()
        && matches!(reader.read_line(&mut line), Ok(n) if n > 0)
        && matches!(serde_json::from_str::<Request>(&line), Ok(Request::Joined));
    // Members resume either way: a node that died while it copied is
    // removed when its lease runs out.
    shared.heard.lock().expect("heard lock")[joiner.node] = Instant::now();
    call_all(shared, &members, |_| Request::Resume, step)?;
    event(shared, "active", new.id, &[]);
    eprintln!(
        "farm node {}: configuration {} active: node {} rejoined{} (members paused {} ms, {} ms of it for its copies); members {:?}",
        shared.id,
        new.id,
        joiner.node,
        if joined { "" } else { " but did not confirm" },
        asked.elapsed().as_millis(),
        started.elapsed().as_millis(),
        new.members
    );
    if joined {
        let _ = write_answer(writer, &Answer::Ok);
    }
    Ok(())
}

/// The middle of every configuration change, at the CM: NEW-CONFIG to
/// `members` (each fences), their reports, the decision of every
/// transaction against `base` (the last active configuration), and apply
/// with `new` (and the node `admit` brings back, if any). Returns the most
/// transactions one member was told were committed, and aborted.
///
/// # Errors
/// The first member that fails a step.
fn install(
    shared: &Shared,
    members: &[usize],
    base: &Configuration,
    new: &Configuration,
    admit: Option<&Admission>,
) -> Result<(usize, usize)> {
    let step = Duration::from_millis(farm_core::limits::RECOVERY_WAIT_MS);
    call_all(
        shared,
        members,
        |_| Request::Fence {
            configuration: new.id,
        },
        step,
    )?;
    let reports: Vec<RecoveryReport> = call_all(shared, members, |_| Request::Report, step)?
        .into_iter()
        .filter_map(|answer| match answer {
            Answer::Report(report) => Some(report),
            _ => None,
        })
        .collect();
    let mut decisions = decide(base, new, &reports);
    let decided = |pick: fn(&Decisions) -> usize| decisions.values().map(pick).max().unwrap_or(0);
    let counts = (decided(|d| d.committed.len()), decided(|d| d.aborted.len()));
    if shared.control.faults().abort_in_recovery {
        // The injected fault (`--fault abort-in-recovery`): a wrong vote.
        for decision in decisions.values_mut() {
            let committed = std::mem::take(&mut decision.committed);
            decision.aborted.extend(committed);
            decision.installs.clear();
        }
    }
    call_all(
        shared,
        members,
        |node| Request::Apply {
            configuration: new.clone(),
            decisions: decisions.get(&node).cloned().unwrap_or_default(),
            admit: admit.cloned(),
        },
        step,
    )?;
    Ok(counts)
}

/// How long a CM waits for an admitted node to serve with its copies.
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// A restarted node's side of a rejoin, first half: asks the CM named by
/// the store's configuration (at the contact it published) to admit it.
/// Returns the CM's answer and the connection, on which
/// [`confirm_admission`] says the node serves.
///
/// # Errors
/// [`Error::Peer`] when the store names no CM contact, the CM cannot be
/// reached, or it refuses (the node is still a member, say: ask again
/// once the store's configuration no longer has it).
pub fn request_admission(
    store: &dyn ConfigStore,
    admission: &Admission,
) -> Result<(Admitted, TcpStream)> {
    let stored = store
        .load()?
        .ok_or_else(|| Error::peer("configuration store", "it holds no configuration"))?;
    let manager = stored.manager;
    let contact = store.contact(manager)?.ok_or_else(|| {
        Error::peer(
            "configuration store",
            format!("node {manager}, the configuration manager, published no contact"),
        )
    })?;
    let name = format!("node {manager}'s control (the configuration manager)");
    let stream = TcpStream::connect_timeout(&contact.control, Duration::from_secs(5))
        .map_err(|e| Error::peer(&name, e))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(JOIN_WAIT))
        .map_err(|e| Error::peer(&name, e))?;
    match ask(&stream, &Request::Join(admission.clone()), &name)? {
        Answer::Admitted(admitted) => Ok((admitted, stream)),
        other => Err(Error::peer(&name, format!("answered {other:?} to a join"))),
    }
}

/// A restarted node's side of a rejoin, second half: it serves in the
/// admitted configuration and holds its copies; the CM resumes everyone.
///
/// # Errors
/// [`Error::Peer`] when the CM does not acknowledge.
pub fn confirm_admission(stream: TcpStream) -> Result<()> {
    let name = "the configuration manager";
    match ask(&stream, &Request::Joined, name)? {
        Answer::Ok => Ok(()),
        other => Err(Error::peer(name, format!("answered {other:?} to joined"))),
    }
}

fn handle(shared: &Shared, request: Request) -> Answer {
    let result: Result<Answer> = match request {
        Request::Probe { .. } => Ok(Answer::Ok),
        Request::Fence { .. } => shared
            .control
            .fence()
            .map(|()| Answer::Ok)
            .map_err(Error::from),
        Request::Report => shared
            .control
            .report()
            .map(Answer::Report)
            .map_err(Error::from),
        Request::Apply {
            configuration,
            decisions,
            admit,
        } => shared
            .control
            .apply(&configuration, &decisions)
            .and_then(|()| match &admit {
                Some(joiner) => shared
                    .control
                    .admit(joiner.node, joiner.inbox, &joiner.regions),
                None => Ok(()),
            })
            .map_err(Error::from)
            .map(|()| {
                if let Some(joiner) = admit {
                    let mut contacts = shared.contacts.lock().expect("contacts lock");
                    if let Some(slot) = contacts.get_mut(joiner.node) {
                        *slot = joiner.contact;
                    }
                }
                adopt(shared, configuration);
                Answer::Ok
            }),
        Request::Join(_) | Request::Joined => Err(Error::peer(
            "control",
            "a join is answered on its own connection only",
        )),
        Request::Resume => {
            shared.control.resume();
            let now = shared.config.lock().expect("config lock").clone();
            *shared.active.lock().expect("active lock") = now;
            Ok(Answer::Ok)
        }
    };
    result.unwrap_or_else(|e| Answer::Error(e.to_string()))
}

/// Takes `configuration` as this agent's: a fresh lease period for every
/// member (the CM that sent it just heard from all of them).
fn adopt(shared: &Shared, configuration: Configuration) {
    let now = Instant::now();
    shared.control.set_lease_until(Some(now + shared.lease));
    *shared.heard.lock().expect("heard lock") = vec![now; configuration.nodes];
    *shared.config.lock().expect("config lock") = configuration;
}

fn monitor_loop(shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep((shared.lease / 10).max(Duration::from_millis(1)));
        let config = shared.config.lock().expect("config lock").clone();
        if !config.is_member(shared.id) {
            continue;
        }
        let heard = shared.heard.lock().expect("heard lock").clone();
        let expired = |node: usize| heard[node].elapsed() > shared.lease;
        if config.manager == shared.id {
            // The CM's own lease: it holds while a majority of members
            // (itself included) renewed within a lease time.
            let mut times: Vec<Instant> = config
                .members
                .iter()
                .map(|&n| {
                    if n == shared.id {
                        Instant::now()
                    } else {
                        heard[n]
                    }
                })
                .collect();
            times.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(&majority) = times.get(config.majority() - 1) {
                shared
                    .control
                    .set_lease_until(Some(majority + shared.lease));
            }
        }
        let unfinished = config.manager == shared.id && shared.unfinished.load(Ordering::Acquire);
        let suspects: Vec<usize> = if config.manager == shared.id {
            config
                .members
                .iter()
                .copied()
                .filter(|&n| n != shared.id && expired(n))
                .collect()
        } else if expired(config.manager) {
            leave_if_removed(shared, &config);
            // The CM is suspected: the first other member takes over; the
            // next ones wait a lease period each before they try (the
            // store's CAS keeps two from both succeeding).
            let rank = config
                .members
                .iter()
                .filter(|&&n| n != config.manager)
                .position(|&n| n == shared.id)
                .unwrap_or(0) as u32;
            if heard[config.manager].elapsed() > shared.lease * (1 + rank) {
                vec![config.manager]
            } else {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        if suspects.is_empty() && !unfinished {
            continue;
        }
        shared.reconfiguring.store(true, Ordering::Release);
        if let Err(error) = reconfigure(shared, &config, suspects) {
            eprintln!(
                "farm node {}: reconfiguration failed (tried again after a lease): {error}",
                shared.id
            );
            leave_if_removed(shared, &config);
            // Try again after a lease period, from the store.
            *shared.heard.lock().expect("heard lock") = vec![Instant::now(); config.nodes];
            shared.unfinished.store(true, Ordering::Release);
            std::thread::sleep(shared.lease);
        } else {
            shared.unfinished.store(false, Ordering::Release);
        }
        shared.reconfiguring.store(false, Ordering::Release);
    }
}

/// A node the store's configuration no longer names was removed while it
/// lived (its lease ran out at a CM that went on without it): it must not
/// serve, and it exits; restarted, it would start afresh.
fn leave_if_removed(shared: &Shared, mine: &Configuration) {
    let Ok(Some(stored)) = shared.store.load() else {
        return;
    };
    if stored.id > mine.id && !stored.is_member(shared.id) {
        eprintln!(
            "farm node {}: removed from the cluster by configuration {} (members {:?}); exiting",
            shared.id, stored.id, stored.members
        );
        std::process::exit(3);
    }
}

fn event(shared: &Shared, what: &str, configuration: u32, nodes: &[usize]) {
    shared.events.lock().expect("events lock").push(Event {
        what: what.to_string(),
        unix_ms: unix_ms(),
        configuration,
        nodes: nodes.to_vec(),
    });
}

/// One control request to `node`, answered within `timeout`.
fn call(shared: &Shared, node: usize, request: &Request, timeout: Duration) -> Result<Answer> {
    let name = format!("node {node}'s control");
    let address = shared.contacts.lock().expect("contacts lock")[node].control;
    let stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|e| Error::peer(&name, e))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Error::peer(&name, e))?;
    ask(&stream, request, &name)
}

/// Sends `request` as one JSON line on `stream` and reads the answer line
/// (an [`Answer::Error`] becomes the error); `name` names the peer.
fn ask(stream: &TcpStream, request: &Request, name: &str) -> Result<Answer> {
    let mut text = serde_json::to_string(request).expect("requests serialize");
    text.push('\n');
    (&*stream)
        .write_all(text.as_bytes())
        .map_err(|e| Error::peer(name, e))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| Error::peer(name, e))?;
    match serde_json::from_str::<Answer>(&line) {
        Ok(Answer::Error(error)) => Err(Error::peer(name, error)),
        Ok(answer) => Ok(answer),
        Err(e) => Err(Error::peer(name, format!("answered garbage: {e}"))),
    }
}

/// Calls `request` on every node of `nodes` at once (this node directly);
/// the answers in the same order.
fn call_all(
    shared: &Shared,
    nodes: &[usize],
    request: impl Fn(usize) -> Request + Sync,
    timeout: Duration,
) -> Result<Vec<Answer>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|&node| {
                let request = &request;
                scope.spawn(move || {
                    if node == shared.id {
                        match handle(shared, request(node)) {
                            Answer::Error(error) => Err(Error::peer("this node", error)),
                            answer => Ok(answer),
                        }
                    } else {
                        call(shared, node, &request(node), timeout)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("control call panicked"))
            .collect()
    })
}

/// The CM's side of a configuration change that removes `suspects` from
/// `mine` (this node's configuration), or finishes one stored earlier.
///
/// A change goes on from the store, not from `mine`: when an earlier one
/// was stored but a member failed before NEW-CONFIG-COMMIT (it died during
/// NEW-CONFIG or apply, or the CM that stored it died), every member is
/// still fenced and the store's configuration is the one to replace; its
/// transactions are decided against the last configuration that became
/// active (`Shared::active`), which may be several ids back. FaRM SOSP'15
/// §5.2 does not say how a half-installed change is finished; this is how
/// ours never wedges.
fn reconfigure(shared: &Shared, mine: &Configuration, mut suspects: Vec<usize>) -> Result<()> {
    let _changing = shared.changing.lock().expect("change lock");
    // An admission may have run since the monitor looked.
    let current = shared.config.lock().expect("config lock").clone();
    let mine = if current.id > mine.id { &current } else { mine };
    let base = shared.active.lock().expect("active lock").clone();
    let mut from = mine.clone();
    if let Some(stored) = shared.store.load()? {
        if stored.id > from.id {
            if stored.manager != shared.id && !suspects.contains(&stored.manager) {
                return Err(Error::peer(
                    "configuration store",
                    format!(
                        "configuration {} is being installed by node {}",
                        stored.id, stored.manager
                    ),
                ));
            }
            from = stored;
        }
    }
    if !from.is_member(shared.id) {
        return Err(Error::peer(
            "configuration store",
            format!("configuration {} does not have this node", from.id),
        ));
    }
    suspects.retain(|n| from.is_member(*n));
    if suspects.is_empty() && from == base {
        return Ok(());
    }
    let old = &from;
    event(shared, "suspected", old.id, &suspects);
    eprintln!(
        "farm node {}: suspecting {suspects:?} in configuration {}",
        shared.id, old.id
    );
    // Probe: go on only with a majority of the old configuration.
    let others: Vec<usize> = old
        .members
        .iter()
        .copied()
        .filter(|n| *n != shared.id && !suspects.contains(n))
        .collect();
    let probe_timeout = shared.lease.max(Duration::from_millis(50));
    let probes: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter()
            .map(|&node| {
                scope.spawn(move || {
                    call(
                        shared,
                        node,
                        &Request::Probe {
                            configuration: old.id,
                        },
                        probe_timeout,
                    )
                    .is_ok()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .collect()
    });
    for (node, answered) in others.iter().zip(&probes) {
        if !answered {
            suspects.push(*node);
        }
    }
    let reachable = 1 + probes.iter().filter(|a| **a).count();
    if reachable < old.majority() {
        return Err(Error::peer(
            "probe",
            format!(
                "only {reachable} of {} members answered: no majority, no change",
                old.members.len()
            ),
        ));
    }
    let new = if suspects.is_empty() && old.manager == shared.id {
        // Finish the stored change: every member answered.
        old.clone()
    } else {
        let Some(new) = old.without(&suspects, shared.id) else {
            return Err(Error::peer(
                "configuration",
                format!("removing {suspects:?} would leave a region with no replica"),
            ));
        };
        if !shared.store.compare_and_swap(Some(old.id), &new)? {
            return Err(Error::peer(
                "configuration store",
                format!("configuration {} was replaced by another manager", old.id),
            ));
        }
        new
    };
    // Everyone gone since the last active configuration.
    let removed: Vec<usize> = base
        .members
        .iter()
        .copied()
        .filter(|n| !new.is_member(*n))
        .collect();
    event(shared, "new-config", new.id, &removed);
    let members = new.members.clone();
    let step = Duration::from_millis(farm_core::limits::RECOVERY_WAIT_MS);
    let (committed, aborted) = install(shared, &members, &base, &new, None)?;
    call_all(shared, &members, |_| Request::Resume, step)?;
    event(shared, "active", new.id, &removed);
    eprintln!(
        "farm node {}: configuration {} active: members {:?}, manager {}; recovery committed {committed} and aborted {aborted} transactions",
        shared.id, new.id, new.members, new.manager
    );
    Ok(())
}
