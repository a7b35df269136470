//! The ZooKeeper configuration store, for node processes on several hosts,
//! beside the embedded [`FileStore`] (one host); [`StoreAddress`] names
//! either, as the cluster file's `config_store` does.
//!
//! FaRM (SOSP'15 §5.2) keeps its configurations in ZooKeeper, and so does
//! [`ZooKeeperStore`]: the configuration is JSON in the znode
//! `<path>/configuration`, and compare-and-swap from configuration c is
//! ZooKeeper's versioned `setData` against the znode version that was read
//! with c (creating the znode when no configuration is expected). Of two
//! would-be configuration managers that both read c, only one write
//! carries the version ZooKeeper still has, so only one moves the cluster
//! to c + 1: the store makes them agree.
//!
//! The client (`zookeeper-client`) is asynchronous; each store keeps a
//! tokio runtime of one worker thread, which also keeps the session alive
//! between calls, and waits for every call at most [`CALL_TIMEOUT`]: a
//! server that does not answer is an error naming it, never a hang. A
//! session that expired or closed is replaced by a new one on the next
//! call. The store may not do anything else: no watches, no ephemeral
//! znodes, nothing outside `<path>`.
//!
//! [`LocalZooKeeper`] starts a real server on loopback for tests (Debian's
//! `zookeeper` package, which `soft-roce-setup/install-deps.sh` installs).

use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use farm_core::config::Configuration;
use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

use crate::error::{Error, Result};
use crate::membership::{ConfigStore, Contact, FileStore};

/// The longest a [`ZooKeeperStore`] waits for one call (connecting
/// included) before it gives up with an error naming the server.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The session timeout a store asks for; the server grants one between 2
/// and 20 of its ticks.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// The znode under a store's path that holds the configuration.
const CONFIGURATION_ZNODE: &str = "configuration";

/// Where a cluster's configurations are kept: the cluster file's
/// `config_store`, written `embedded` (the default) or
/// `zk://host:port[,host:port…]/path`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreAddress {
    /// [`FileStore`]: `configuration.json` in the cluster's data
    /// directory, under `flock`; node processes on one host.
    #[default]
    Embedded,
    /// [`ZooKeeperStore`]: the znode `<path>/configuration` on the
    /// ZooKeeper ensemble `servers`.
    ZooKeeper {
        /// `host:port`, comma-separated (ZooKeeper's connect string).
        servers: String,
        /// The store's znode path: starts with `/`, no trailing `/`.
        path: String,
    },
}

impl StoreAddress {
    /// Parses `embedded` or `zk://host:port[,host:port…]/path` (e.g.
    /// `zk://127.0.0.1:2181/farm/cluster-a`).
    ///
    /// # Errors
    /// What is wrong with `text`, in words.
    pub fn parse(text: &str) -> std::result::Result<StoreAddress, String> {
        if text == "embedded" {
            return Ok(StoreAddress::Embedded);
        }
        let Some(rest) = text.strip_prefix("zk://") else {
            return Err(format!(
                "a configuration store is \"embedded\" or \"zk://host:port[,host:port...]/path\", got {text:?}"
            ));
        };
        let Some(slash) = rest.find('/') else {
            return Err(format!(
                "{text:?} has no znode path after the servers (e.g. zk://127.0.0.1:2181/farm/cluster-a)"
            ));
        };
        let (servers, path) = rest.split_at(slash);
        if servers.is_empty() {
            return Err(format!("{text:?} names no server before its path"));
        }
        for server in servers.split(',') {
            check_server(server).map_err(|why| format!("{text:?}: server {server:?} {why}"))?;
        }
        check_path(path).map_err(|why| format!("{text:?}: path {path:?} {why}"))?;
        Ok(StoreAddress::ZooKeeper {
            servers: servers.to_string(),
            path: path.to_string(),
        })
    }

    /// Whether this is the embedded store (the default, left out of a
    /// cluster file that is written).
    pub fn is_embedded(&self) -> bool {
        *self == StoreAddress::Embedded
    }
}

fn check_server(server: &str) -> std::result::Result<(), &'static str> {
    let Some((host, port)) = server.rsplit_once(':') else {
        return Err("has no port (host:port)");
    };
    if host.is_empty() {
        return Err("has no host (host:port)");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return Err("is not a host name or address");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("has no port number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

fn check_path(path: &str) -> std::result::Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with '/'");
    }
    if path == "/" {
        return Err("must name a znode below the root");
    }
    if path.ends_with('/') {
        return Err("must not end with '/'");
    }
    for part in path[1..].split('/') {
        if part.is_empty() {
            return Err("has an empty component ('//')");
        }
        if part == "." || part == ".." {
            return Err("has a '.' or '..' component");
        }
    }
    if path.chars().any(char::is_control) {
        return Err("has a control character");
    }
    if path == "/zookeeper" || path.starts_with("/zookeeper/") {
        return Err("is inside /zookeeper, which ZooKeeper reserves");
    }
    Ok(())
}

impl FromStr for StoreAddress {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<StoreAddress, String> {
        StoreAddress::parse(text)
    }
}

impl TryFrom<String> for StoreAddress {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<StoreAddress, String> {
        StoreAddress::parse(&text)
    }
}

impl From<StoreAddress> for String {
    fn from(address: StoreAddress) -> String {
        address.to_string()
    }
}

impl fmt::Display for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreAddress::Embedded => f.write_str("embedded"),
            StoreAddress::ZooKeeper { servers, path } => write!(f, "zk://{servers}{path}"),
        }
    }
}

/// Opens the store at `address`: the embedded one keeps its file in
/// `data_dir` (the cluster's); a ZooKeeper store connects on its first
/// call.
///
/// # Errors
/// [`Error::Peer`] when the ZooKeeper store's runtime cannot be made.
pub fn open_store(address: &StoreAddress, data_dir: &Path) -> Result<Arc<dyn ConfigStore>> {
    Ok(match address {
        StoreAddress::Embedded => Arc::new(FileStore::new(data_dir)),
        StoreAddress::ZooKeeper { servers, path } => Arc::new(ZooKeeperStore::new(servers, path)?),
    })
}

/// The ZooKeeper configuration store: the JSON of the current
/// [`Configuration`] in the znode `<path>/configuration` of the ensemble
/// `servers`, compare-and-swapped by znode version (see the module docs).
pub struct ZooKeeperStore {
    servers: String,
    /// `<path>`, created (persistent, with its parents) when missing.
    path: String,
    /// `<path>/configuration`.
    znode: String,
    /// The session, made on the first call and again after it expired.
    /// Dropped before `runtime` (field order is drop order).
    client: Mutex<Option<zk::Client>>,
    runtime: tokio::runtime::Runtime,
}

impl ZooKeeperStore {
    /// A store at `path` on `servers` (`host:port`, comma-separated);
    /// nothing is connected until the first call.
    ///
    /// # Errors
    /// [`Error::Peer`] when `servers` or `path` is malformed (see
    /// [`StoreAddress::parse`]) or the runtime cannot be made.
    pub fn new(servers: &str, path: &str) -> Result<ZooKeeperStore> {
        let address = format!("zk://{servers}{path}");
        let StoreAddress::ZooKeeper { servers, path } =
            StoreAddress::parse(&address).map_err(|why| Error::peer("configuration store", why))?
        else {
            unreachable!("a zk:// address parses as ZooKeeper");
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("farm-zookeeper")
            .enable_time()
            .build()
            .map_err(|e| {
                Error::peer(
                    format!("ZooKeeper {servers}"),
                    format!("cannot start the client's runtime: {e}"),
                )
            })?;
        Ok(ZooKeeperStore {
            znode: format!("{path}/{CONFIGURATION_ZNODE}"),
            servers,
            path,
            client: Mutex::new(None),
            runtime,
        })
    }

    /// [`ZooKeeperStore::new`] from `zk://host:port[,host:port…]/path`.
    ///
    /// # Errors
    /// [`Error::Peer`] when `address` is malformed or names the embedded
    /// store; as [`ZooKeeperStore::new`].
    pub fn open(address: &str) -> Result<ZooKeeperStore> {
        match StoreAddress::parse(address).map_err(|why| Error::peer("configuration store", why))? {
            StoreAddress::ZooKeeper { servers, path } => ZooKeeperStore::new(&servers, &path),
            StoreAddress::Embedded => Err(Error::peer(
                "configuration store",
                "\"embedded\" is not a ZooKeeper address",
            )),
        }
    }

    /// The znode that holds the configuration: `<path>/configuration`.
    pub fn znode(&self) -> &str {
        &self.znode
    }

    fn error(&self, what: impl fmt::Display) -> Error {
        Error::peer(format!("ZooKeeper {}", self.servers), what)
    }

    /// The error of a failed operation `doing` (e.g. "read"); forgets the
    /// session when the client says it is gone, so that the next call
    /// makes a new one.
    fn failed(&self, doing: &str, error: &zk::Error) -> Error {
        if matches!(
            error,
            zk::Error::SessionExpired
                | zk::Error::ClientClosed
                | zk::Error::NoHosts
                | zk::Error::AuthFailed
        ) {
            *self.client.lock().expect("zookeeper client lock") = None;
        }
        self.error(format!("cannot {doing} {}: {error}", self.znode))
    }

    /// The session's client, connecting first when there is none or the
    /// last one ended.
    async fn client(&self) -> Result<zk::Client> {
        if let Some(client) = self.client.lock().expect("zookeeper client lock").as_ref() {
            if !client.state().is_terminated() {
                return Ok(client.clone());
            }
        }
        let client = zk::Client::connector()
            .with_session_timeout(SESSION_TIMEOUT)
            .connect(&self.servers)
            .await
            .map_err(|e| self.error(format!("cannot connect: {e}")))?;
        *self.client.lock().expect("zookeeper client lock") = Some(client.clone());
        Ok(client)
    }

    /// Runs `operation` with the session's client on the store's runtime,
    /// for at most [`CALL_TIMEOUT`] (connecting included).
    fn call<T, F, Fut>(&self, doing: &str, operation: F) -> Result<T>
    where
        F: FnOnce(zk::Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let outcome = self.runtime.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, async {
                let client = self.client().await?;
                operation(client).await
            })
            .await
        });
        outcome.unwrap_or_else(|_elapsed| {
            // A session that does not answer is not trusted again.
            *self.client.lock().expect("zookeeper client lock") = None;
            Err(self.error(format!(
                "no answer within {} ms to {doing} {}",
                CALL_TIMEOUT.as_millis(),
                self.znode
            )))
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<Configuration> {
        let configuration: Configuration = serde_json::from_slice(bytes)
            .map_err(|e| self.error(format!("{} holds no configuration: {e}", self.znode)))?;
        configuration
            .check()
            .map_err(|e| self.error(format!("{} holds a broken configuration: {e}", self.znode)))?;
        Ok(configuration)
    }

    /// The stored configuration and the znode version it was read at.
    async fn read(&self, client: &zk::Client) -> Result<Option<(Configuration, i32)>> {
        match client.get_data(&self.znode).await {
            Ok((bytes, stat)) => Ok(Some((self.decode(&bytes)?, stat.version))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.failed("read", &e)),
        }
    }

    /// Creates the configuration znode holding `bytes` (and `<path>` with
    /// its parents when missing); false when it exists already.
    async fn create(&self, client: &zk::Client, bytes: &[u8]) -> Result<bool> {
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        match client.create(&self.znode, bytes, &options).await {
            Ok(_) => return Ok(true),
            Err(zk::Error::NodeExists) => return Ok(false),
            Err(zk::Error::NoNode) => {}
            Err(e) => return Err(self.failed("create", &e)),
        }
        client
            .mkdir(&self.path, &options)
            .await
            .map_err(|e| self.failed(&format!("create {} to hold", self.path), &e))?;
        match client.create(&self.znode, bytes, &options).await {
            Ok(_) => Ok(true),
            Err(zk::Error::NodeExists) => Ok(false),
            Err(e) => Err(self.failed("create", &e)),
        }
    }
}

fn encode(configuration: &Configuration) -> Vec<u8> {
    serde_json::to_vec(configuration).expect("a configuration serializes")
}

impl ConfigStore for ZooKeeperStore {
    fn load(&self) -> Result<Option<Configuration>> {
        self.call("read", |client| async move {
            Ok(self
                .read(&client)
                .await?
                .map(|(configuration, _)| configuration))
        })
    }

    fn compare_and_swap(&self, expected: Option<u32>, next: &Configuration) -> Result<bool> {
        let bytes = encode(next);
        self.call("replace", |client| async move {
            let Some(expected) = expected else {
                return self.create(&client, &bytes).await;
            };
            let Some((stored, version)) = self.read(&client).await? else {
                return Ok(false);
            };
            if stored.id != expected {
                return Ok(false);
            }
            // Only a write at the version read with `expected` succeeds:
            // another writer since then made it BadVersion.
            match client.set_data(&self.znode, &bytes, Some(version)).await {
                Ok(_) => Ok(true),
                Err(zk::Error::BadVersion | zk::Error::NoNode) => Ok(false),
                Err(e) => Err(self.failed("replace", &e)),
            }
        })
    }

    fn put_contact(&self, node: usize, contact: &Contact) -> Result<()> {
        let znode = format!("{}/contact-{node}", self.path);
        let bytes = serde_json::to_vec(contact).expect("a contact serializes");
        self.call("publish a contact in", |client| async move {
            let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            match client.set_data(&znode, &bytes, None).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.failed("write", &e)),
            }
            client
                .mkdir(&self.path, &options)
                .await
                .map_err(|e| self.failed(&format!("create {} to hold", self.path), &e))?;
            match client.create(&znode, &bytes, &options).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(self.failed("create", &e)),
            }
            client
                .set_data(&znode, &bytes, None)
                .await
                .map(|_| ())
                .map_err(|e| self.failed("write", &e))
        })
    }

    fn contact(&self, node: usize) -> Result<Option<Contact>> {
        let znode = format!("{}/contact-{node}", self.path);
        self.call("read a contact from", |client| async move {
            match client.get_data(&znode).await {
                Ok((bytes, _)) => serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| self.error(format!("{znode} holds no contact: {e}"))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(self.failed("read", &e)),
            }
        })
    }

    fn reset(&self, first: &Configuration) -> Result<()> {
        let bytes = encode(first);
        let created = self.call("reset", |client| async move {
            match client.delete(&self.znode, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.failed("remove", &e)),
            }
            self.create(&client, &bytes).await
        })?;
        if !created {
            return Err(self.error(format!(
                "another process wrote {} while the cluster started",
                self.znode
            )));
        }
        Ok(())
    }
}

/// The jar of Debian's `zookeeper` package, which [`LocalZooKeeper`] runs.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Where that package keeps its logging configuration (on the class path).
const ZOOKEEPER_CONF_DIR: &str = "/etc/zookeeper/conf";
/// How long [`LocalZooKeeper::start`] waits for the server to answer.
const LOCAL_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries at a free port: another process may take the port between our
/// probe and the server's bind.
const LOCAL_START_TRIES: usize = 3;

/// A real ZooKeeper server for tests: a child process (Java, Debian's
/// `zookeeper` package) on `127.0.0.1` at a free port, with its data in a
/// temporary directory; killed, and its directory removed, on drop.
pub struct LocalZooKeeper {
    child: Child,
    port: u16,
    /// Data, configuration and the server's output; removed after the
    /// child is gone (field order is drop order).
    dir: tempfile::TempDir,
}

impl LocalZooKeeper {
    /// Starts a server and waits until it serves (about half a second
    /// here; at most 30 s).
    ///
    /// # Errors
    /// [`Error::Launch`] when [`ZOOKEEPER_JAR`] is missing (run
    /// `soft-roce-setup/install-deps.sh`), when `java` cannot be started,
    /// or when the server exits or does not answer in time (with the last
    /// lines it wrote); [`Error::File`] for its temporary files.
    pub fn start() -> Result<LocalZooKeeper> {
        if !Path::new(ZOOKEEPER_JAR).exists() {
            return Err(launch_error(format!(
                "{ZOOKEEPER_JAR} is missing: run soft-roce-setup/install-deps.sh (it installs Debian's zookeeper package)"
            )));
        }
        let mut last = None;
        for _ in 0..LOCAL_START_TRIES {
            match LocalZooKeeper::start_once() {
                Ok(server) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("at least one try"))
    }

    fn start_once() -> Result<LocalZooKeeper> {
        let dir = tempfile::Builder::new()
            .prefix("farm-zookeeper-")
            .tempdir()
            .map_err(|source| Error::File {
                what: "make a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let port = free_port()?;
        let data = dir.path().join("data");
        let config = dir.path().join("zoo.cfg");
        let log = dir.path().join("server.log");
        let text = format!(
            "tickTime=200\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n",
            data.display()
        );
        write_file(&config, text.as_bytes())?;
        let output = std::fs::File::create(&log).map_err(|source| Error::File {
            what: "create",
            path: log.clone(),
            source,
        })?;
        let errors = output.try_clone().map_err(|source| Error::File {
            what: "reopen",
            path: log.clone(),
            source,
        })?;
        let child = Command::new("java")
            // Small and quick to start: tests run several at once on two
            // cores.
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-cp")
            .arg(format!("{ZOOKEEPER_JAR}:{ZOOKEEPER_CONF_DIR}"))
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|e| launch_error(format!("cannot start java (ZooKeeper's server): {e}")))?;
        let mut server = LocalZooKeeper { child, port, dir };
        let deadline = Instant::now() + LOCAL_START_TIMEOUT;
        loop {
            if server.serves() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(launch_error(format!(
                    "ZooKeeper's server on port {port} exited ({status}): {}",
                    server.last_lines()
                )));
            }
            if Instant::now() > deadline {
                return Err(launch_error(format!(
                    "ZooKeeper's server on port {port} did not answer within {} s: {}",
                    LOCAL_START_TIMEOUT.as_secs(),
                    server.last_lines()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server serves sessions. `ruok` is not enough: it
    /// answers `imok` while the server still refuses sessions (for most of
    /// a second here when several start at once); `srvr` answers "This
    /// ZooKeeper instance is not currently serving requests" until then.
    fn serves(&self) -> bool {
        self.ask(b"ruok").is_some_and(|answer| answer == "imok")
            && self
                .ask(b"srvr")
                .is_some_and(|answer| answer.starts_with("Zookeeper version:"))
    }

    /// A four-letter command's answer on the client port.
    fn ask(&self, command: &[u8]) -> Option<String> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        stream.write_all(command).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    fn last_lines(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// `127.0.0.1:PORT`: the server's client address (a connect string).
    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:PORT<path>`: a store address on this server;
    /// `path` starts with `/`.
    pub fn address(&self, path: &str) -> String {
        format!("zk://{}{path}", self.servers())
    }
}

impl Drop for LocalZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch_error(what: String) -> Error {
    Error::Launch {
        node: usize::MAX,
        what,
    }
}

fn free_port() -> Result<u16> {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::File {
        what: "bind a loopback port in",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    let port = probe
        .local_addr()
        .map_err(|source| Error::File {
            what: "read the address of",
            path: PathBuf::from("a probe socket"),
            source,
        })?
        .port();
    Ok(port)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::File {
        what: "write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_text() {
        for text in [
            "embedded",
            "zk://127.0.0.1:2181/farm",
            "zk://a:1,b.example:2181,10.0.0.3:2182/farm/cluster-a",
        ] {
            let address = StoreAddress::parse(text).unwrap();
            assert_eq!(address.to_string(), text);
        }
        assert_eq!(StoreAddress::default(), StoreAddress::Embedded);
    }
}
