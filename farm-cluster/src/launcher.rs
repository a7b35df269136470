//! A launcher of local node processes: writes a cluster file for N nodes on
//! this host and starts one `farm node` process per node; they are killed
//! when the [`Launched`] handle goes.
//!
//! Ports without a race: the launcher binds every listening socket itself
//! (loopback, port 0), writes the ports it got into the cluster file, and
//! hands each socket down to the node process that listens on it (the
//! descriptor survives `exec`; its number is in [`BOOTSTRAP_FD_VARIABLE`]
//! or [`VERBS_FD_VARIABLE`]). No other process can take a port between the
//! launcher choosing it and the node listening on it, as it could when a
//! port was picked by binding and closing a probe socket.

use std::collections::VecDeque;
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use farm_core::{FabricKind, VerbsDevice};

use crate::cluster_file::{ClusterFile, NodeEntry};
use crate::error::{Error, Result};
use crate::zookeeper::StoreAddress;

/// The environment variable that tells node 0 which inherited descriptor
/// is its bootstrap listener.
pub const BOOTSTRAP_FD_VARIABLE: &str = "FARM_BOOTSTRAP_FD";
/// The environment variable that tells a verbs node which inherited
/// descriptor is its handshake listener.
pub const VERBS_FD_VARIABLE: &str = "FARM_VERBS_FD";

/// The listening socket a launcher handed this process in `variable`, if
/// it did; it must be listening at `expected`.
///
/// # Errors
/// [`Error::Launch`] when the variable names no listening socket, or one
/// bound elsewhere.
pub fn inherited_listener(variable: &str, expected: SocketAddr) -> Result<Option<TcpListener>> {
    let Ok(text) = std::env::var(variable) else {
        return Ok(None);
    };
    let bad = |what: String| Error::Launch {
        node: usize::MAX,
        what: format!("{variable}={text}: {what}"),
    };
    let fd: RawFd = text
        .parse()
        .map_err(|_| bad("not a descriptor number".into()))?;
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `listening`, a
    // c_int we own; on a descriptor that is no socket it only fails.
    let answer = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if answer != 0 || listening == 0 {
        return Err(bad("not a listening socket".into()));
    }
    // SAFETY: (1) the descriptor is open and a listening socket (checked
    // above); (2) it was handed to this process for this purpose alone, so
    // nothing else here owns or closes it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let local = listener
        .local_addr()
        .map_err(|e| bad(format!("cannot read its address: {e}")))?;
    if local != expected {
        return Err(bad(format!(
            "it listens at {local}, the cluster file says {expected}"
        )));
    }
    // Children of this process must not inherit it.
    set_close_on_exec(listener.as_raw_fd(), true);
    Ok(Some(listener))
}

fn set_close_on_exec(fd: RawFd, on: bool) {
    // SAFETY: fcntl on a descriptor this process owns changes only its
    // flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            let flags = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, flags);
        }
    }
}

/// What a cluster of node processes on this host looks like.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    pub nodes: usize,
    pub fabric: FabricKind,
    pub copies: usize,
    pub region_bytes: u64,
    pub verbs: VerbsDevice,
    /// The membership agents' lease time (the cluster file's `lease_ms`).
    pub lease_ms: u64,
    /// Where configurations are agreed (the cluster file's
    /// `config_store`).
    pub config_store: StoreAddress,
}

/// The sockets reserved for one node.
struct Reserved {
    bootstrap: TcpListener,
    verbs: Option<TcpListener>,
}

fn reserve() -> Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").map_err(|source| Error::File {
        what: "bind a loopback port in",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::File {
        what: "read the address of",
        path: PathBuf::from("a reserved port"),
        source,
    })
}

impl LocalCluster {
    /// Reserves every node's ports, writes `dir/cluster.toml` (data in
    /// `dir/data`) and starts `exe node --config dir/cluster.toml --id i`
    /// with `args(i)` appended, for every node. Their standard error is this
    /// process's.
    ///
    /// # Errors
    /// [`Error::ClusterFile`] for an impossible cluster; [`Error::Launch`]
    /// when a process cannot be started.
    pub fn launch(
        &self,
        dir: &Path,
        exe: &Path,
        args: &dyn Fn(usize) -> Vec<String>,
    ) -> Result<Launched> {
        let verbs = self.fabric == FabricKind::Verbs;
        let mut reserved = Vec::new();
        let mut nodes = Vec::new();
        for id in 0..self.nodes {
            let sockets = Reserved {
                bootstrap: reserve()?,
                verbs: if verbs { Some(reserve()?) } else { None },
            };
            nodes.push(NodeEntry {
                id,
                bootstrap: local_addr(&sockets.bootstrap)?,
                verbs: sockets.verbs.as_ref().map(local_addr).transpose()?,
            });
            reserved.push(sockets);
        }
        let file = ClusterFile {
            fabric: self.fabric,
            data_dir: dir.join("data"),
            copies: self.copies,
            regions_per_node: 1,
            region_bytes: self.region_bytes,
            device: self.verbs.device.clone(),
            gid_index: self.verbs.gid_index,
            lease_ms: self.lease_ms,
            config_store: self.config_store.clone(),
            nodes,
        };
        let config = dir.join("cluster.toml");
        file.check().map_err(|why| Error::ClusterFile {
            path: config.clone(),
            why,
        })?;
        file.write(&config)?;
        let mut launched = Launched {
            config,
            file,
            exe: exe.to_path_buf(),
            children: Vec::new(),
            last_lines: Vec::new(),
            _dir: None,
        };
        for (id, sockets) in reserved.into_iter().enumerate() {
            let last_lines = Arc::new(Mutex::new(VecDeque::new()));
            let child = launched.spawn(id, sockets, &args(id), &last_lines)?;
            launched.children.push(Some(child));
            launched.last_lines.push(last_lines);
        }
        Ok(launched)
    }
}

impl LocalCluster {
    /// [`LocalCluster::launch`] in a new temporary directory (named
    /// `prefix…`), removed when the [`Launched`] goes.
    ///
    /// # Errors
    /// [`Error::File`] when the directory cannot be made; as
    /// [`LocalCluster::launch`].
    pub fn launch_in_temporary_dir(
        &self,
        prefix: &str,
        exe: &Path,
        args: &dyn Fn(usize) -> Vec<String>,
    ) -> Result<Launched> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|source| Error::File {
                what: "make a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let mut launched = self.launch(dir.path(), exe, args)?;
        launched._dir = Some(dir);
        Ok(launched)
    }
}

/// Node processes started by [`LocalCluster::launch`]; those still running
/// are killed when it goes.
pub struct Launched {
    config: PathBuf,
    file: ClusterFile,
    exe: PathBuf,
    children: Vec<Option<Child>>,
    /// The last lines each node process wrote to its standard error.
    last_lines: Vec<Arc<Mutex<VecDeque<String>>>>,
    /// The temporary directory of [`LocalCluster::launch_in_temporary_dir`],
    /// removed after the children are gone (field order is drop order).
    _dir: Option<tempfile::TempDir>,
}

impl Launched {
    fn spawn(
        &self,
        id: usize,
        sockets: Reserved,
        args: &[String],
        last_lines: &Arc<Mutex<VecDeque<String>>>,
    ) -> Result<Child> {
        let mut command = Command::new(&self.exe);
        command
            .arg("node")
            .arg("--config")
            .arg(&self.config)
            .arg("--id")
            .arg(id.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Node 0 listens on its bootstrap socket; the others' bootstrap
        // ports stay reserved until they start (nobody connects to them).
        let mut handed = Vec::new();
        if id == 0 {
            command.env(
                BOOTSTRAP_FD_VARIABLE,
                sockets.bootstrap.as_raw_fd().to_string(),
            );
            handed.push(sockets.bootstrap.as_raw_fd());
        }
        if let Some(verbs) = &sockets.verbs {
            command.env(VERBS_FD_VARIABLE, verbs.as_raw_fd().to_string());
            handed.push(verbs.as_raw_fd());
        }
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls fcntl, which is async-signal-safe, on descriptors the
        // parent keeps open until `spawn` returns.
        unsafe {
            command.pre_exec(move || {
                for fd in &handed {
                    set_close_on_exec(*fd, false);
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| Error::Launch {
            node: id,
            what: format!("cannot start {}: {e}", self.exe.display()),
        })?;
        // Our copies close here; the child has its own.
        drop(sockets);
        // What the node says goes on to our standard error, and its last
        // lines are kept: they name the cause when it fails.
        if let Some(stderr) = child.stderr.take() {
            let last_lines = last_lines.clone();
            let _ = std::thread::Builder::new()
                .name(format!("farm-node-{id}-stderr"))
                .spawn(move || {
                    for line in std::io::BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        eprintln!("{line}");
                        let mut kept = last_lines.lock().expect("node output lock");
                        if kept.len() == 20 {
                            kept.pop_front();
                        }
                        kept.push_back(line);
                    }
                });
        }
        Ok(child)
    }

    /// Kills node `id`'s process (SIGKILL) if it runs; true if it did.
    pub fn kill(&mut self, id: usize) -> bool {
        let Some(Some(child)) = self.children.get_mut(id) else {
            return false;
        };
        matches!(child.try_wait(), Ok(None)) && child.kill().is_ok()
    }

    /// Starts node `id` (not node 0) again after its process died: the new
    /// process finds the configuration store without it and rejoins the
    /// running cluster as a new member (see the README's "Failures").
    ///
    /// # Errors
    /// [`Error::Launch`] when `id` is node 0, still runs, or cannot be
    /// started; shm clusters only (over verbs the new process would need
    /// the verbs port its predecessor held).
    pub fn restart(&mut self, id: usize, args: &[String]) -> Result<()> {
        let refuse = |what: &str| Error::Launch {
            node: id,
            what: what.to_string(),
        };
        if id == 0 || id >= self.children.len() {
            return Err(refuse("only a node other than 0 can be restarted"));
        }
        if self.file.fabric != FabricKind::Shm {
            return Err(refuse("restarting a node is built for the shm fabric only"));
        }
        if let Some(child) = &mut self.children[id] {
            match child.try_wait() {
                Ok(Some(_)) => {}
                _ => return Err(refuse("it is still running")),
            }
        }
        let sockets = Reserved {
            bootstrap: reserve()?,
            verbs: None,
        };
        let last_lines = self.last_lines[id].clone();
        let child = self.spawn(id, sockets, args, &last_lines)?;
        self.children[id] = Some(child);
        Ok(())
    }

    /// The node processes that exited unsuccessfully within `wait` (after
    /// a driver's request failed, say), each with its status and the last
    /// thing it said: the cause the driver could not see.
    pub fn failures(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut failed = Vec::new();
        loop {
            for (id, child) in self.children.iter_mut().enumerate() {
                let Some(process) = child else { continue };
                let Ok(Some(status)) = process.try_wait() else {
                    continue;
                };
                *child = None;
                if !status.success() {
                    // The output thread may still be reading its last lines.
                    std::thread::sleep(Duration::from_millis(50));
                    let last = self.last_lines[id]
                        .lock()
                        .expect("node output lock")
                        .back()
                        .cloned()
                        .unwrap_or_default();
                    failed.push(format!("node {id} exited ({status}): {last}"));
                }
            }
            if !failed.is_empty() || Instant::now() > deadline {
                return failed;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while no node process has exited unsuccessfully.
    pub fn all_alive(&mut self) -> bool {
        self.children.iter_mut().all(|child| match child {
            Some(process) => !matches!(process.try_wait(), Ok(Some(status)) if !status.success()),
            None => true,
        })
    }

    /// `error` of a driver's request, or, when node processes failed, their
    /// own reasons (the driver only sees a connection go).
    pub fn explain(&mut self, error: Error) -> Error {
        let failed = self.failures(Duration::from_secs(2));
        if failed.is_empty() {
            return error;
        }
        Error::Launch {
            node: usize::MAX,
            what: format!("{} (the driver saw: {error})", failed.join("; ")),
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn file(&self) -> &ClusterFile {
        &self.file
    }

    /// Node 0's bootstrap address, where drivers connect.
    pub fn node0(&self) -> SocketAddr {
        self.file.nodes[0].bootstrap
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.children.get(id)?.as_ref().map(Child::id)
    }

    /// A node process that exited already, with its status.
    ///
    /// # Errors
    /// [`Error::Launch`] when its status cannot be read.
    pub fn exited(&mut self) -> Result<Option<(usize, ExitStatus)>> {
        for (id, child) in self.children.iter_mut().enumerate() {
            if let Some(process) = child {
                if let Some(status) = process.try_wait().map_err(|e| Error::Launch {
                    node: id,
                    what: e.to_string(),
                })? {
                    *child = None;
                    return Ok(Some((id, status)));
                }
            }
        }
        Ok(None)
    }

    /// Waits up to `timeout` for every node process to exit; the ones still
    /// running then are killed. Returns each node's status (`None`: killed).
    ///
    /// # Errors
    /// [`Error::Launch`] when a status cannot be read.
    pub fn wait(mut self, timeout: Duration) -> Result<Vec<Option<ExitStatus>>> {
        let deadline = Instant::now() + timeout;
        let mut statuses = vec![None; self.children.len()];
        for (id, child) in self.children.iter_mut().enumerate() {
            let Some(process) = child else { continue };
            loop {
                let status = process.try_wait().map_err(|e| Error::Launch {
                    node: id,
                    what: e.to_string(),
                })?;
                if let Some(status) = status {
                    statuses[id] = Some(status);
                    *child = None;
                    break;
                }
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(statuses)
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        for process in self.children.iter_mut().flatten() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}
