//! The serve loop of a node process: node 0 takes a driver's request,
//! hands it to every node in a round, and every node runs it through the
//! [`Service`] it names (the benchmarks, the checker). Services plug in
//! from above: this crate knows none of them.
//!
//! A node that fails a request exits with the error (its connection
//! closes, and every other node's next round fails with it); it first
//! tells node 0 why, and node 0 passes every node's reason to the driver.

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use farm_core::Node;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::cluster_file::ClusterFile;
use crate::error::{Error, Result};
use crate::process::NodeProcess;
use crate::protocol::{
    encode_value, read_message, write_message, Opening, Payload, Progress, ToDriver,
    PROTOCOL_VERSION,
};

/// Something node processes run for a driver.
pub trait Service: Send + Sync {
    /// The name a driver asks for (`bench`, `check`).
    fn name(&self) -> &'static str;

    /// Node 0 checks a request before any node acts on it; the text goes
    /// back to the driver.
    ///
    /// # Errors
    /// Why the request is refused.
    fn check(&self, request: &RawValue) -> std::result::Result<(), String>;

    /// Every node runs an accepted request; node 0 reports to the driver
    /// through `site`.
    ///
    /// # Errors
    /// The request failed on this node.
    fn run(&self, site: &ServiceSite<'_>, request: &RawValue) -> Result<()>;
}

/// What a command is, as node 0 hands it to every node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Command {
    Run {
        service: String,
        request: Payload,
    },
    Stop,
    /// Only node 0 has a command; the others' part is this.
    Waiting,
}

impl Command {
    /// For logs: the service and its request (shortened).
    fn describe(&self) -> String {
        match self {
            Command::Run { service, request } => {
                let shown: String = request.get().chars().take(200).collect();
                format!("run {service} {shown}")
            }
            Command::Stop => "stop".into(),
            Command::Waiting => "waiting".into(),
        }
    }
}

/// The connection to the driver (node 0 only); gone once the driver left.
struct DriverLink {
    stream: Option<TcpStream>,
}

impl DriverLink {
    fn send(&mut self, message: &ToDriver) {
        if let Some(stream) = &mut self.stream {
            if write_message(stream, message, "the driver").is_err() {
                // The driver went away; the nodes finish the request anyway.
                self.stream = None;
            }
        }
    }
}

/// What a service runs with on one node: the node, rounds with the other
/// node processes, and (on node 0) the driver. Every method takes `&self`,
/// so a service's threads may share it.
pub struct ServiceSite<'a> {
    process: Mutex<&'a mut NodeProcess>,
    node: Node,
    file: ClusterFile,
    driver: Mutex<DriverLink>,
}

impl ServiceSite<'_> {
    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn id(&self) -> usize {
        self.node.id()
    }

    /// The cluster file the nodes share.
    pub fn file(&self) -> &ClusterFile {
        &self.file
    }

    /// Nodes in the cluster.
    pub fn nodes(&self) -> usize {
        self.file.nodes.len()
    }

    /// A round with every other node: contributes `part`, returns every
    /// node's part by id.
    ///
    /// # Errors
    /// See [`NodeProcess::exchange`].
    pub fn exchange<T: Serialize + DeserializeOwned>(
        &self,
        round: &str,
        part: &T,
    ) -> Result<Vec<T>> {
        self.process
            .lock()
            .expect("rounds are not poisoned")
            .exchange(round, part)
    }

    /// A round whose parts only node 0 learns: `Some(parts)` there, `None`
    /// elsewhere.
    ///
    /// # Errors
    /// See [`NodeProcess::exchange`].
    pub fn gather<T: Serialize + DeserializeOwned>(
        &self,
        round: &str,
        part: &T,
    ) -> Result<Option<Vec<T>>> {
        self.process
            .lock()
            .expect("rounds are not poisoned")
            .gather(round, part)
    }

    /// Gathers every node's `part` at node 0 and hands them to the driver
    /// as they are, one output each, without node 0 decoding them (a check's
    /// histories are tens of MiB).
    ///
    /// # Errors
    /// See [`NodeProcess::exchange`].
    pub fn gather_to_driver<T: Serialize>(&self, round: &str, part: &T) -> Result<()> {
        let parts = self
            .process
            .lock()
            .expect("rounds are not poisoned")
            .gather_payloads(round, encode_value(part))?;
        for value in parts.into_iter().flatten() {
            self.send(&ToDriver::Output { value });
        }
        Ok(())
    }

    /// The configuration changes this node managed (see
    /// [`crate::membership::Event`]).
    pub fn membership_events(&self) -> Vec<crate::membership::Event> {
        self.process
            .lock()
            .expect("rounds are not poisoned")
            .membership_events()
    }

    /// Sends this node's pending truncations and waits until every ring it
    /// sends on is drained (what it wrote is installed everywhere).
    ///
    /// # Errors
    /// See [`NodeProcess::drain`].
    pub fn drain(&self) -> Result<()> {
        self.process
            .lock()
            .expect("rounds are not poisoned")
            .drain()
    }

    /// Every node has reached this point.
    ///
    /// # Errors
    /// See [`NodeProcess::exchange`].
    pub fn barrier(&self, round: &str) -> Result<()> {
        self.exchange(round, &()).map(|_| ())
    }

    fn send(&self, message: &ToDriver) {
        self.driver.lock().expect("driver link lock").send(message);
    }

    /// Tells the driver what the nodes are doing (node 0; elsewhere a
    /// no-op).
    pub fn status(&self, text: &str) {
        self.send(&ToDriver::Status {
            text: text.to_string(),
        });
    }

    /// Tells the driver how far the request has come.
    pub fn progress(&self, progress: Progress) {
        self.send(&ToDriver::Progress(progress));
    }

    /// Hands the driver a result.
    pub fn output<T: Serialize>(&self, value: &T) {
        self.send(&ToDriver::Output {
            value: encode_value(value),
        });
    }
}

/// Node 0: the next well-formed command from a driver. A malformed one,
/// another version's, or one for an unknown service gets its error and
/// the connection is dropped; nothing else happens.
fn next_command(
    process: &mut NodeProcess,
    services: &[&dyn Service],
    quiet: bool,
) -> Result<(Command, TcpStream)> {
    loop {
        let (stream, from) = process.accept_driver()?;
        let peer = format!("driver {from}");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut reader = BufReader::new(stream);
        let answer = match read_message::<Opening>(&mut reader, &peer) {
            Err(error) => Err(error.to_string()),
            Ok(opening) if opening.protocol() != PROTOCOL_VERSION => Err(format!(
                "the driver speaks protocol version {}, the nodes speak {PROTOCOL_VERSION}",
                opening.protocol()
            )),
            Ok(Opening::Join { node, .. }) => Err(format!(
                "node {node} tried to join a cluster that is already serving"
            )),
            Ok(Opening::Stop { .. }) => Ok(Command::Stop),
            Ok(Opening::Run {
                service, request, ..
            }) => match services.iter().find(|s| s.name() == service) {
                None => Err(format!(
                    "unknown service {service:?}: the nodes serve {}",
                    services
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Some(found) => found
                    .check(&request)
                    .map(|()| Command::Run { service, request }),
            },
        };
        let mut stream = reader.into_inner();
        match answer {
            Ok(command) => {
                if !quiet {
                    eprintln!("farm node 0: {peer}: {}", command.describe());
                }
                let _ = stream.set_read_timeout(None);
                return Ok((command, stream));
            }
            Err(error) => {
                eprintln!("farm node 0: rejected {peer}: {error}");
                let _ = write_message(&mut stream, &ToDriver::Error { error }, &peer);
            }
        }
    }
}

/// Serves drivers until one asks the nodes to stop (then returns: the
/// caller finishes the process), the process is killed or a request fails.
/// Node 0 logs each command on stderr unless `quiet`.
///
/// # Errors
/// The request that failed, with every node's reason.
pub fn serve(process: &mut NodeProcess, services: &[&dyn Service], quiet: bool) -> Result<()> {
    let id = process.id();
    let node = process.node().clone();
    let file = process.file.clone();
    process.set_round_wait(None)?;
    loop {
        let (command, stream) = if id == 0 {
            let (command, stream) = next_command(process, services, quiet)?;
            (command, Some(stream))
        } else {
            (Command::Waiting, None)
        };
        let mut driver = DriverLink { stream };
        let parts = match process.exchange("command", &command) {
            Ok(parts) => parts,
            Err(error) => {
                driver.send(&ToDriver::Error {
                    error: error.to_string(),
                });
                return Err(error);
            }
        };
        let (service, request) = match parts.into_iter().next() {
            Some(Command::Stop) => {
                driver.send(&ToDriver::Done);
                return Ok(());
            }
            Some(Command::Run { service, request }) => (service, request),
            other => {
                return Err(Error::peer(
                    "node 0",
                    format!("sent {other:?} as the command"),
                ))
            }
        };
        let result = match services.iter().find(|s| s.name() == service) {
            None => Err(Error::Service {
                service: service.clone(),
                error: format!("node {id} does not serve it"),
            }),
            Some(found) => {
                let site = ServiceSite {
                    process: Mutex::new(&mut *process),
                    node: node.clone(),
                    file: file.clone(),
                    driver: Mutex::new(driver),
                };
                let result = found.run(&site, &request);
                driver = site.driver.into_inner().expect("driver link lock");
                result
            }
        };
        match result {
            Ok(()) => driver.send(&ToDriver::Done),
            Err(error) => {
                // Node 0 tells the driver; the others tell node 0, whose
                // next round then fails with this text (not just "node k
                // closed its connection").
                let mut text = error.to_string();
                if id == 0 {
                    let others = process.failures(Duration::from_millis(500));
                    if !others.is_empty() {
                        text = format!("{text} (errors of other nodes: {})", others.join("; "));
                    }
                }
                driver.send(&ToDriver::Error {
                    error: text.clone(),
                });
                process.report_failure(&error);
                return Err(Error::Service {
                    service,
                    error: text,
                });
            }
        }
    }
}

/// `farm node`: starts node `id` of the cluster in the file at `config`,
/// serves `services` to drivers until one asks the nodes to stop, then
/// drains its rings and exits with the others.
///
/// # Errors
/// The cluster file's, start-up's and the serve loop's.
pub fn run_node(
    config: &std::path::Path,
    id: usize,
    services: &[&dyn Service],
    quiet: bool,
) -> Result<()> {
    let file = ClusterFile::load(config)?;
    let nodes = file.nodes.len();
    let wait = Duration::from_millis(file.lease_ms * 4) + Duration::from_secs(10);
    if let crate::process::Start::Rejoin = crate::process::how_to_start(&file, id, wait)? {
        let joined = crate::process::rejoin(file, id, farm_core::Faults::default())?;
        if !quiet {
            eprintln!("farm node {id}: serving as a rejoined member; stop it with a signal");
        }
        // It serves from its own threads; this one watches for its removal
        // (the agent exits the process then) until a signal ends it.
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let _ = joined.node();
        }
    }
    let mut process = NodeProcess::start(file, id, farm_core::Faults::default())?;
    if !quiet {
        eprintln!(
            "farm node {id}: serving ({nodes} nodes); drive it with `farm bench --cluster {}`, stop it with `--stop-nodes` or a signal",
            config.display()
        );
    }
    serve(&mut process, services, quiet)?;
    process.finish()
}
