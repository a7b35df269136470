//! `farm bench --cluster`: a driver and the `farm node` processes it drives.
//!
//! The driver connects to node 0's bootstrap address (from the cluster
//! file) and sends one JSON line, `{"bench": {...}}` (a [`BenchRequest`]).
//! Node 0 hands the request to every node in a bootstrap round; each node
//! loads its share of the workload (see [`super::site`]), and for every
//! thread count of the request the nodes meet, run their client threads
//! for the warm-up and the measured time, and send what they measured to
//! node 0, which merges it, runs the workload's check and answers the
//! driver. Node 0 answers with JSON lines:
//!
//! ```text
//! {"status": "loading tatp …"}
//! {"progress": {"run": 0, "elapsed_s": 3.0, "duration_s": 10.0, "node0_tps": 61234.0}}
//! {"report": {…BenchReport…}}        one per thread count
//! {"done": true}                    or {"error": "…"}
//! ```
//!
//! A node that fails a request exits with the error (its connection
//! closes, and every other node's next round fails with it): without
//! failure recovery a cluster with a failed node cannot go on.
//!
//! The loaded workload stays in memory between requests: a request for the
//! same workload, scale and distribution reuses it (its rows, as the last
//! run left them, still satisfy its checks); another workload is loaded
//! next to it, so size `region_bytes` for every workload you will run.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use farm_core::{Error, NodeProcess};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{LoadOptions, WORKLOADS};
use super::site::Site;
use super::ycsb::Distribution;
use super::{measure, report, BenchReport, Measured, RunOptions, RunShape, Workload};

/// What a driver asks the cluster to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchRequest {
    pub workload: String,
    pub scale: f64,
    /// "zipfian" or "uniform" (YCSB).
    pub distribution: String,
    /// Client threads per node; one run for each.
    pub threads: Vec<usize>,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// TPC-C's warehouses on each node.
    #[serde(default = "one")]
    pub warehouses_per_node: usize,
}

fn one() -> usize {
    1
}

impl BenchRequest {
    /// Node 0 checks a request before any node acts on it.
    pub fn check(&self) -> Result<Distribution, String> {
        if !WORKLOADS.contains(&self.workload.as_str()) {
            return Err(format!(
                "unknown workload {:?}: one of {}",
                self.workload,
                WORKLOADS.join(", ")
            ));
        }
        if self.threads.is_empty() || self.threads.iter().any(|t| *t == 0 || *t > 256) {
            return Err("threads: 1 to 256 per node".into());
        }
        let seconds = |s: f64| s.is_finite() && (0.0..=86_400.0).contains(&s);
        if !seconds(self.warmup_s) || !seconds(self.duration_s) || self.duration_s == 0.0 {
            return Err("warm-up and duration: seconds, duration above 0".into());
        }
        if !(1..=1024).contains(&self.warehouses_per_node) {
            return Err("warehouses: 1 to 1024 per node".into());
        }
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= 10_000.0) {
            return Err("scale: above 0, at most 10,000".into());
        }
        match self.distribution.as_str() {
            "zipfian" => Ok(Distribution::Zipfian),
            "uniform" => Ok(Distribution::Uniform),
            other => Err(format!(
                "unknown distribution {other:?}: zipfian or uniform"
            )),
        }
    }

    fn key(&self) -> String {
        format!(
            "{} {} {} {}",
            self.workload, self.scale, self.distribution, self.warehouses_per_node
        )
    }
}

/// What a node process sends node 0 after a run.
#[derive(Serialize, Deserialize)]
struct Part {
    measured: Measured,
    tally: Value,
}

fn send(driver: &mut Option<TcpStream>, message: &Value) {
    if let Some(stream) = driver {
        let mut line = serde_json::to_vec(message).expect("JSON values serialize");
        line.push(b'\n');
        if stream.write_all(&line).is_err() {
            // The driver went away; the nodes finish the request anyway.
            *driver = None;
        }
    }
}

/// Node 0: the next well-formed command from a driver, `{"bench": {…}}` or
/// `{"stop": true}`. A malformed one gets its error and the connection is
/// dropped; nothing else happens.
fn next_command(process: &mut NodeProcess, quiet: bool) -> farm_core::Result<(Value, TcpStream)> {
    loop {
        let (stream, from) = process.accept_driver()?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let answer = match reader.read_line(&mut line) {
            Ok(0) | Err(_) => continue,
            Ok(_) => serde_json::from_str::<Value>(&line)
                .map_err(|e| format!("not a JSON line: {e}"))
                .and_then(|message| {
                    if message == json!({ "stop": true }) {
                        return Ok(message);
                    }
                    let request = serde_json::from_value::<BenchRequest>(message["bench"].clone())
                        .map_err(|e| {
                            format!("expected {{\"bench\": {{…}}}} or {{\"stop\": true}}: {e}")
                        })?;
                    request.check()?;
                    Ok(json!({ "bench": request }))
                }),
        };
        let mut stream = Some(reader.into_inner());
        match answer {
            Ok(command) => {
                if !quiet {
                    eprintln!("farm node 0: driver {from}: {command}");
                }
                return Ok((command, stream.take().expect("just set")));
            }
            Err(error) => {
                eprintln!("farm node 0: rejected a driver at {from}: {error}");
                send(&mut stream, &json!({ "error": error }));
            }
        }
    }
}

/// Serves drivers until one sends `{"stop": true}` (then returns: the
/// caller finishes the process), the process is killed or a request fails.
/// Node 0 logs each command on stderr unless `quiet`.
pub fn serve(process: &mut NodeProcess, quiet: bool) -> farm_core::Result<()> {
    let id = process.node.id();
    let nodes = process.file.nodes.len();
    let copies = process.file.copies.min(nodes);
    let fabric = process.file.fabric.clone();
    let node = process.node.clone();
    let mut loaded: Option<(String, Box<dyn Workload>)> = None;
    process.set_round_wait(None)?;
    loop {
        let (command, mut driver) = if id == 0 {
            let (command, stream) = next_command(process, quiet)?;
            (command, Some(stream))
        } else {
            (Value::Null, None)
        };
        let parts = match process.exchange("command", command) {
            Ok(parts) => parts,
            Err(error) => {
                send(&mut driver, &json!({ "error": error.to_string() }));
                return Err(error);
            }
        };
        if parts[0] == json!({ "stop": true }) {
            send(&mut driver, &json!({ "done": true }));
            return Ok(());
        }
        let request: BenchRequest = serde_json::from_value(parts[0]["bench"].clone())
            .map_err(|e| Error::Peer(format!("node 0 sent a malformed request: {e}")))?;
        let distribution = request.check().map_err(Error::Config)?;
        let cell = Mutex::new(&mut *process);
        let rounds = |round: &str, part: Value| {
            cell.lock()
                .expect("rounds are not poisoned")
                .exchange(round, part)
        };
        let site = Site::process(&node, nodes, &rounds);
        let result = (|| -> farm_core::Result<()> {
            if loaded.as_ref().map(|(key, _)| key) != Some(&request.key()) {
                send(
                    &mut driver,
                    &json!({ "status": format!("loading {} (scale {}) on {nodes} nodes", request.workload, request.scale) }),
                );
                let workload = super::config::load_with(
                    &site,
                    &request.workload,
                    &LoadOptions {
                        scale: request.scale,
                        distribution,
                        warehouses_per_node: request.warehouses_per_node,
                    },
                )?;
                loaded = Some((request.key(), workload));
            }
            let workload = loaded.as_ref().expect("just loaded").1.as_ref();
            for (run, &threads) in request.threads.iter().enumerate() {
                site.barrier("bench-start")?;
                let options = RunOptions {
                    threads_per_node: threads,
                    warmup: Duration::from_secs_f64(request.warmup_s),
                    duration: Duration::from_secs_f64(request.duration_s),
                    progress: false,
                };
                let measured = measure(&[&node], workload, &options, &mut |elapsed, rate| {
                    send(
                        &mut driver,
                        &json!({ "progress": { "run": run, "elapsed_s": elapsed, "duration_s": request.duration_s, "node0_tps": rate } }),
                    );
                })?;
                let part = Part {
                    measured,
                    tally: workload.tally(),
                };
                let parts = site.per_process(
                    "bench-measured",
                    serde_json::to_value(&part).expect("serializes"),
                )?;
                if id == 0 {
                    let mut all: Option<Measured> = None;
                    let mut tallies = Vec::new();
                    for (from, part) in parts.into_iter().enumerate() {
                        let part: Part = serde_json::from_value(part).map_err(|e| {
                            Error::Peer(format!("node {from} sent a malformed measurement: {e}"))
                        })?;
                        tallies.push(part.tally);
                        match &mut all {
                            None => all = Some(part.measured),
                            Some(all) => all.merge(&part.measured)?,
                        }
                    }
                    let all = all.expect("node 0's own part");
                    send(&mut driver, &json!({ "status": "checking" }));
                    let consistency = workload.check(&node, &tallies)?;
                    let report = report(
                        workload,
                        &all,
                        consistency,
                        &RunShape {
                            fabric: &fabric,
                            nodes,
                            copies,
                            duration: options.duration,
                        },
                    );
                    send(&mut driver, &json!({ "report": report }));
                }
                // Nobody runs again before node 0's check is done.
                site.barrier("bench-checked")?;
            }
            Ok(())
        })();
        drop(site);
        match result {
            Ok(()) => send(&mut driver, &json!({ "done": true })),
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
                send(&mut driver, &json!({ "error": text }));
                process.report_failure(&error);
                return Err(Error::Peer(text));
            }
        }
    }
}

/// The driver's side: sends `request` to the cluster whose node 0 listens
/// at `address` (waiting up to `wait` for it to come up), shows progress on
/// stderr (unless `quiet`), and returns one report per thread count.
pub fn drive(
    address: SocketAddr,
    request: &BenchRequest,
    wait: Duration,
    quiet: bool,
) -> farm_core::Result<Vec<BenchReport>> {
    // Loading a large population can take minutes; a dead node closes the
    // connection long before this.
    let answer_within = Duration::from_secs(
        1800 + (request.warmup_s + request.duration_s) as u64 * request.threads.len() as u64,
    );
    talk(
        address,
        &json!({ "bench": request }),
        answer_within,
        wait,
        quiet,
    )
}

/// Asks the node processes of the cluster whose node 0 listens at
/// `address` to finish and exit.
pub fn stop(address: SocketAddr, wait: Duration) -> farm_core::Result<()> {
    talk(
        address,
        &json!({ "stop": true }),
        Duration::from_secs(120),
        wait,
        true,
    )
    .map(|_| ())
}

fn talk(
    address: SocketAddr,
    command: &Value,
    answer_within: Duration,
    wait: Duration,
    quiet: bool,
) -> farm_core::Result<Vec<BenchReport>> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Error::Peer(format!("node 0 at {address}: {what}: {e}"))
    };
    // Nodes still starting refuse the connection, or (node 0 waiting for
    // the others) answer {"starting": true}: try again for a while.
    let deadline = std::time::Instant::now() + wait;
    let mut reports = Vec::new();
    let mut bar = false;
    let mut reader = 'connect: loop {
        let retry = |error: &dyn std::fmt::Display, what: &str| {
            if std::time::Instant::now() > deadline {
                Err(failed(what, error))
            } else {
                std::thread::sleep(Duration::from_millis(100));
                Ok(())
            }
        };
        let mut stream = match TcpStream::connect_timeout(&address, Duration::from_secs(10)) {
            Ok(stream) => stream,
            Err(error) => {
                retry(&error, "connect")?;
                continue;
            }
        };
        stream
            .set_read_timeout(Some(answer_within))
            .map_err(|e| failed("socket", &e))?;
        let mut line = serde_json::to_vec(command).expect("serializes");
        line.push(b'\n');
        stream
            .write_all(&line)
            .map_err(|e| failed("send the request", &e))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                return Err(failed(
                    "closed the connection without an answer",
                    &"a node process failed (see its output)",
                ))
            }
            Err(error) => return Err(failed("read", &error)),
            Ok(_) => {}
        }
        let first: Value = serde_json::from_str(&line)
            .map_err(|e| failed("answered something that is not JSON", &e))?;
        if first.get("starting").is_some() {
            retry(&"the nodes are still starting", "connect")?;
            continue;
        }
        if !handle(&first, &mut reports, &mut bar, quiet, &failed)? {
            return Ok(reports);
        }
        break 'connect reader;
    };
    loop {
        let mut line = String::new();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| failed("read", &e))?;
        if read == 0 {
            return Err(failed(
                "connection closed",
                &"a node process failed (see its output)",
            ));
        }
        let message: Value = serde_json::from_str(&line)
            .map_err(|e| failed("answered something that is not JSON", &e))?;
        if !handle(&message, &mut reports, &mut bar, quiet, &failed)? {
            return Ok(reports);
        }
    }
}

/// One line from node 0: false once it says the request is done.
fn handle(
    message: &Value,
    reports: &mut Vec<BenchReport>,
    bar: &mut bool,
    quiet: bool,
    failed: &dyn Fn(&str, &dyn std::fmt::Display) -> Error,
) -> farm_core::Result<bool> {
    let ends_bar = ["error", "report", "done", "status"]
        .iter()
        .any(|key| message.get(key).is_some());
    if ends_bar && *bar {
        eprintln!();
        *bar = false;
    }
    if let Some(error) = message.get("error") {
        return Err(Error::Peer(format!(
            "the cluster failed the request: {}",
            error.as_str().unwrap_or("(no text)")
        )));
    }
    if message.get("done").is_some() {
        return Ok(false);
    }
    if let Some(report) = message.get("report") {
        reports.push(
            serde_json::from_value(report.clone())
                .map_err(|e| failed("sent a malformed report", &e))?,
        );
    } else if let Some(progress) = message.get("progress") {
        if !quiet {
            let number = |key: &str| progress[key].as_f64().unwrap_or(0.0);
            super::progress_bar(
                number("elapsed_s"),
                number("duration_s"),
                &format!("node 0: {:>9.0} tx/s", number("node0_tps")),
            );
            *bar = true;
        }
    } else if let Some(status) = message.get("status") {
        if !quiet {
            eprintln!("farm bench: {}", status.as_str().unwrap_or(""));
        }
    } else {
        return Err(failed("sent an unknown message", &format!("{message:.80}")));
    }
    Ok(true)
}
