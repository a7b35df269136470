//! Start-up exchange between node processes, over TCP through node 0: every
//! node sends its part of a round (its remote keys, say), node 0 answers
//! everyone with all the parts once it has them. A round is also a
//! barrier. Messages are JSON lines; anything else is a clear error naming
//! the peer, and every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// How long a node waits for the others to show up or answer.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Bootstrap {
    id: usize,
    nodes: usize,
    /// Node 0: a connection to every other node, by id (None for itself).
    peers: Vec<Option<BufReader<TcpStream>>>,
    /// Other nodes: the connection to node 0.
    coordinator: Option<BufReader<TcpStream>>,
    /// Node 0: the listener stays open for drivers (`farm bench --cluster`).
    listener: Option<TcpListener>,
}

fn protocol_error(peer: &str, what: impl std::fmt::Display) -> Error {
    Error::Peer(format!("bootstrap with {peer}: {what}"))
}

fn read_line(stream: &mut BufReader<TcpStream>, peer: &str) -> Result<Value> {
    let mut line = String::new();
    let read = stream
        .read_line(&mut line)
        .map_err(|e| protocol_error(peer, e))?;
    if read == 0 {
        return Err(protocol_error(peer, "connection closed"));
    }
    serde_json::from_str(&line).map_err(|e| {
        protocol_error(
            peer,
            format!("not a bootstrap message ({e}): {:.80}", line.trim()),
        )
    })
}

fn write_line(stream: &mut TcpStream, value: &Value, peer: &str) -> Result<()> {
    let mut line = serde_json::to_vec(value).expect("JSON values serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| protocol_error(peer, e))
}

impl Bootstrap {
    /// Joins the cluster: node 0 listens on its address and waits for the
    /// others; the others connect to node 0 (retrying until it is up).
    pub fn join(id: usize, addresses: &[SocketAddr]) -> Result<Bootstrap> {
        let nodes = addresses.len();
        let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
        if id == 0 {
            let listener = TcpListener::bind(addresses[0])
                .map_err(|e| protocol_error(&addresses[0].to_string(), e))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| protocol_error("listener", e))?;
            let mut peers: Vec<Option<BufReader<TcpStream>>> = (0..nodes).map(|_| None).collect();
            let mut joined = 1;
            while joined < nodes {
                match listener.accept() {
                    Ok((stream, from)) => {
                        stream
                            .set_nonblocking(false)
                            .map_err(|e| protocol_error(&from.to_string(), e))?;
                        stream
                            .set_read_timeout(Some(BOOTSTRAP_TIMEOUT))
                            .map_err(|e| protocol_error(&from.to_string(), e))?;
                        let mut reader = BufReader::new(stream);
                        let hello = read_line(&mut reader, &from.to_string())?;
                        let peer = hello["hello"].as_u64().map(|n| n as usize);
                        match peer {
                            Some(peer) if peer > 0 && peer < nodes && peers[peer].is_none() => {
                                peers[peer] = Some(reader);
                                joined += 1;
                            }
                            _ => {
                                let _ = write_line(
                                    reader.get_mut(),
                                    &json!({"error": "expected {\"hello\": <node id>} from a node not yet joined", "starting": true}),
                                    &from.to_string(),
                                );
                            }
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(protocol_error(
                                "node 0",
                                format!("only {joined} of {nodes} nodes joined in time"),
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(error) => return Err(protocol_error("listener", error)),
                }
            }
            return Ok(Bootstrap {
                id,
                nodes,
                peers,
                coordinator: None,
                listener: Some(listener),
            });
        }
        let target = addresses[0];
        let stream = loop {
            match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                Ok(stream) => break stream,
                Err(error) => {
                    if Instant::now() > deadline {
                        return Err(protocol_error(&format!("node 0 at {target}"), error));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream
            .set_read_timeout(Some(BOOTSTRAP_TIMEOUT))
            .map_err(|e| protocol_error("node 0", e))?;
        let mut reader = BufReader::new(stream);
        write_line(reader.get_mut(), &json!({ "hello": id }), "node 0")?;
        Ok(Bootstrap {
            id,
            nodes,
            peers: Vec::new(),
            coordinator: Some(reader),
            listener: None,
        })
    }

    /// How long a round may wait for the other nodes: [`BOOTSTRAP_TIMEOUT`]
    /// during start-up; `None` (for ever) while nodes wait for a driver's
    /// next command. A node process that dies still ends the wait: its
    /// connection closes.
    pub fn set_wait(&mut self, timeout: Option<Duration>) -> Result<()> {
        let streams = self.peers.iter().flatten().chain(self.coordinator.iter());
        for stream in streams {
            stream
                .get_ref()
                .set_read_timeout(timeout)
                .map_err(|e| protocol_error("bootstrap", e))?;
        }
        Ok(())
    }

    /// A node other than 0 that gives up tells node 0 why, instead of a
    /// part: node 0's round then fails with the reason. Best effort.
    pub fn report_failure(&mut self, error: &str) {
        if let Some(coordinator) = &mut self.coordinator {
            let _ = write_line(
                coordinator.get_mut(),
                &json!({ "failed": error, "node": self.id }),
                "node 0",
            );
        }
    }

    /// Node 0, after a failure of its own: the reasons other nodes gave
    /// (their [`Bootstrap::report_failure`]) within `wait`, as
    /// "node k: reason". A node that runs out of memory and exits makes
    /// node 0 fail too (its reads find the node gone): this names the cause.
    pub fn failures(&mut self, wait: Duration) -> Vec<String> {
        let mut found = Vec::new();
        for (peer, reader) in self.peers.iter_mut().enumerate() {
            let Some(reader) = reader else { continue };
            let _ = reader.get_ref().set_read_timeout(Some(wait));
            if let Ok(message) = read_line(reader, &format!("node {peer}")) {
                if let Some(failure) = message.get("failed") {
                    found.push(format!(
                        "node {peer}: {}",
                        failure.as_str().unwrap_or("(no reason given)")
                    ));
                }
            }
        }
        found
    }

    /// Node 0: waits for the next connection on the bootstrap address (a
    /// driver such as `farm bench --cluster`) and returns it with its
    /// peer's address. Other nodes have no listener.
    pub fn accept_driver(&mut self) -> Result<(TcpStream, SocketAddr)> {
        let listener = self
            .listener
            .as_ref()
            .ok_or_else(|| Error::Config("only node 0 takes drivers".into()))?;
        listener
            .set_nonblocking(false)
            .map_err(|e| protocol_error("listener", e))?;
        listener.accept().map_err(|e| protocol_error("listener", e))
    }

    /// One round: contributes `part`, returns every node's part by id.
    pub fn exchange(&mut self, round: &str, part: Value) -> Result<Vec<Value>> {
        if let Some(coordinator) = &mut self.coordinator {
            write_line(
                coordinator.get_mut(),
                &json!({ "round": round, "node": self.id, "part": part }),
                "node 0",
            )?;
            let answer = read_line(coordinator, "node 0")?;
            if let Some(error) = answer.get("error") {
                return Err(protocol_error("node 0", error));
            }
            if answer["round"] != round {
                return Err(protocol_error(
                    "node 0",
                    format!("answered round {} to round {round}", answer["round"]),
                ));
            }
            let parts = answer["parts"].as_array().cloned().unwrap_or_default();
            if parts.len() != self.nodes {
                return Err(protocol_error("node 0", "wrong number of parts"));
            }
            return Ok(parts);
        }
        let mut parts = vec![Value::Null; self.nodes];
        parts[0] = part;
        for (peer, slot) in parts.iter_mut().enumerate().skip(1) {
            let name = format!("node {peer}");
            let reader = self.peers[peer].as_mut().expect("every node joined");
            let message = read_line(reader, &name)?;
            if let Some(failure) = message.get("failed") {
                return Err(Error::Peer(format!(
                    "node {peer} failed: {}",
                    failure.as_str().unwrap_or("(no reason given)")
                )));
            }
            if message["round"] != round || message["node"].as_u64() != Some(peer as u64) {
                let _ = write_line(
                    reader.get_mut(),
                    &json!({"error": format!("expected round {round}")}),
                    &name,
                );
                return Err(protocol_error(
                    &name,
                    format!("sent {message:.80} during round {round}"),
                ));
            }
            *slot = message["part"].clone();
        }
        let answer = json!({ "round": round, "parts": parts });
        for peer in 1..self.nodes {
            let reader = self.peers[peer].as_mut().expect("every node joined");
            write_line(reader.get_mut(), &answer, &format!("node {peer}"))?;
        }
        Ok(parts)
    }
}
