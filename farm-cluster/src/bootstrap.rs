//! Rounds between node processes, over TCP through node 0: every node
//! sends its part of a round (its remote keys, say), node 0 answers
//! everyone with all the parts once it has them. A round is also a
//! barrier. The messages are [`crate::protocol`]'s; every wait is bounded
//! during start-up.

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::protocol::{
    decode_value, encode_value, read_message, write_message, ClusterShape, FromNode0, Opening,
    Payload, ToDriver, ToNode0, PROTOCOL_VERSION,
};

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
    /// Once serving with a membership agent, a node that dies leaves the
    /// rounds instead of failing them (see [`Bootstrap::tolerate_departures`]).
    tolerant: bool,
    /// Node 0: nodes that left (their connection closed).
    departed: Vec<bool>,
}

fn node_name(node: usize) -> String {
    format!("node {node}")
}

impl Bootstrap {
    /// Joins the cluster `shape` describes: node 0 listens on `listener`
    /// (or binds its address) and waits for the others, refusing a node
    /// that speaks another protocol version or whose cluster file says
    /// something else; the others connect to node 0 (retrying until it is
    /// up).
    ///
    /// # Errors
    /// [`Error::Peer`] when the others do not join within
    /// [`BOOTSTRAP_TIMEOUT`] or node 0 cannot be reached.
    pub fn join(
        id: usize,
        shape: &ClusterShape,
        listener: Option<TcpListener>,
    ) -> Result<Bootstrap> {
        let addresses: Vec<SocketAddr> = shape.nodes.iter().map(|n| n.bootstrap).collect();
        let nodes = addresses.len();
        let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
        if id == 0 {
            let listener = match listener {
                Some(listener) => listener,
                None => {
                    TcpListener::bind(addresses[0]).map_err(|e| Error::peer(addresses[0], e))?
                }
            };
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::peer("listener", e))?;
            let mut peers: Vec<Option<BufReader<TcpStream>>> = (0..nodes).map(|_| None).collect();
            let mut joined = 1;
            // Why the last node was refused: drivers are told (instead of
            // "still starting"), so that they fail with the cause.
            let mut refused: Option<String> = None;
            while joined < nodes {
                match listener.accept() {
                    Ok((stream, from)) => {
                        let admitted = Self::admit(stream, from, shape, &peers, &mut refused)?;
                        if let Some((peer, reader)) = admitted {
                            peers[peer] = Some(reader);
                            joined += 1;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(Error::peer(
                                "node 0",
                                format!("only {joined} of {nodes} nodes joined in time"),
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(error) => return Err(Error::peer("listener", error)),
                }
            }
            return Ok(Bootstrap {
                id,
                nodes,
                peers,
                coordinator: None,
                listener: Some(listener),
                tolerant: false,
                departed: vec![false; nodes],
            });
        }
        let target = addresses[0];
        let mut stream = loop {
            match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                Ok(stream) => break stream,
                Err(error) => {
                    if Instant::now() > deadline {
                        return Err(Error::peer(format!("node 0 at {target}"), error));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream
            .set_read_timeout(Some(BOOTSTRAP_TIMEOUT))
            .map_err(|e| Error::peer("node 0", e))?;
        write_message(
            &mut stream,
            &Opening::Join {
                protocol: PROTOCOL_VERSION,
                node: id,
                shape: shape.clone(),
            },
            "node 0",
        )?;
        Ok(Bootstrap {
            id,
            nodes,
            peers: Vec::new(),
            coordinator: Some(BufReader::new(stream)),
            listener: None,
            tolerant: false,
            departed: vec![false; nodes],
        })
    }

    /// Node 0, starting: reads a new connection's first line. A node that
    /// joins is admitted; anything else (another version, another cluster
    /// file, a node twice, a driver too early, garbage) gets an answer and
    /// is dropped.
    fn admit(
        stream: TcpStream,
        from: SocketAddr,
        shape: &ClusterShape,
        peers: &[Option<BufReader<TcpStream>>],
        refused: &mut Option<String>,
    ) -> Result<Option<(usize, BufReader<TcpStream>)>> {
        let peer = from.to_string();
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(10))))
            .map_err(|e| Error::peer(&peer, e))?;
        let mut reader = BufReader::new(stream);
        let nodes = shape.nodes.len();
        let refusal = match read_message::<Opening>(&mut reader, &peer) {
            Ok(Opening::Join { protocol, node, .. }) if protocol != PROTOCOL_VERSION => format!(
                "node {node} speaks protocol version {protocol}, node 0 speaks {PROTOCOL_VERSION}"
            ),
            Ok(Opening::Join { node, .. }) if node == 0 || node >= nodes || peers[node].is_some() => {
                format!("node {node} is not a node of this cluster, or joined already")
            }
            Ok(Opening::Join {
                node,
                shape: theirs,
                ..
            }) => match shape.difference(&theirs) {
                Some((field, ours, theirs)) => format!(
                    "node {node}'s cluster file says {field} = {theirs}, node 0's says {field} = {ours}"
                ),
                None => {
                    reader
                        .get_ref()
                        .set_read_timeout(Some(BOOTSTRAP_TIMEOUT))
                        .map_err(|e| Error::peer(&peer, e))?;
                    return Ok(Some((node, reader)));
                }
            },
            Ok(Opening::Run { .. } | Opening::Stop { .. }) => {
                // A driver too early: it tries again, or learns why the
                // nodes cannot start.
                let answer = match refused {
                    Some(why) => ToDriver::Error {
                        error: format!("the nodes cannot start: {why}"),
                    },
                    None => ToDriver::Starting,
                };
                let _ = write_message(reader.get_mut(), &answer, &peer);
                return Ok(None);
            }
            Err(error) => {
                let _ = write_message(
                    reader.get_mut(),
                    &ToDriver::Error {
                        error: error.to_string(),
                    },
                    &peer,
                );
                return Ok(None);
            }
        };
        eprintln!("farm node 0: refused {peer}: {refusal}");
        let _ = write_message(
            reader.get_mut(),
            &FromNode0::Refused {
                error: refusal.clone(),
            },
            &peer,
        );
        *refused = Some(refusal);
        Ok(None)
    }

    pub fn id(&self) -> usize {
        self.id
    }

    /// From now on, node 0 takes a node whose connection breaks as gone:
    /// rounds go on with the others, and their parts are those of the
    /// nodes still there, in id order. (The membership agent reconfigures
    /// the engine around it.)
    pub fn tolerate_departures(&mut self) {
        self.tolerant = true;
    }

    /// Node 0: the nodes still in the rounds.
    pub fn present(&self) -> Vec<usize> {
        (0..self.nodes)
            .filter(|&n| !self.departed.get(n).copied().unwrap_or(false))
            .collect()
    }

    /// Node 0: `peer` left; a round goes on without it if departures are
    /// tolerated, else fails with `error`.
    fn depart(&mut self, peer: usize, error: Error) -> Result<()> {
        if !self.tolerant {
            return Err(error);
        }
        eprintln!("farm node 0: node {peer} left the rounds ({error})");
        self.departed[peer] = true;
        self.peers[peer] = None;
        Ok(())
    }

    /// How long a round may wait for the other nodes: [`BOOTSTRAP_TIMEOUT`]
    /// during start-up; `None` (for ever) while nodes wait for a driver's
    /// next command. A node process that dies still ends the wait: its
    /// connection closes.
    ///
    /// # Errors
    /// [`Error::Peer`] when a socket refuses the setting.
    pub fn set_wait(&mut self, timeout: Option<Duration>) -> Result<()> {
        let streams = self.peers.iter().flatten().chain(self.coordinator.iter());
        for stream in streams {
            stream
                .get_ref()
                .set_read_timeout(timeout)
                .map_err(|e| Error::peer("bootstrap", e))?;
        }
        Ok(())
    }

    /// A node other than 0 that gives up tells node 0 why, instead of a
    /// part: node 0's round then fails with the reason. Best effort.
    pub fn report_failure(&mut self, error: &str) {
        if let Some(coordinator) = &mut self.coordinator {
            let _ = write_message(
                coordinator.get_mut(),
                &ToNode0::Failed {
                    node: self.id,
                    error: error.to_string(),
                },
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
            if let Ok(ToNode0::Failed { error, .. }) = read_message(reader, &node_name(peer)) {
                found.push(format!("node {peer}: {error}"));
            }
        }
        found
    }

    /// Node 0: waits for the next connection on the bootstrap address (a
    /// driver such as `farm bench --cluster`) and returns it with its
    /// peer's address. Other nodes have no listener.
    ///
    /// # Errors
    /// [`Error::Peer`] when the listener fails, or on a node other than 0.
    pub fn accept_driver(&mut self) -> Result<(TcpStream, SocketAddr)> {
        let listener = self
            .listener
            .as_ref()
            .ok_or_else(|| Error::peer(node_name(self.id), "only node 0 takes drivers"))?;
        listener
            .set_nonblocking(false)
            .map_err(|e| Error::peer("listener", e))?;
        listener.accept().map_err(|e| Error::peer("listener", e))
    }

    /// One round: contributes `part`, returns every node's part by id.
    ///
    /// # Errors
    /// [`Error::NodeFailed`] when a node gave up; [`Error::Peer`] when one
    /// went away, spoke out of turn or sent a part that is not a `T`.
    pub fn exchange<T: Serialize + DeserializeOwned>(
        &mut self,
        round: &str,
        part: &T,
    ) -> Result<Vec<T>> {
        let parts = self.exchange_values(round, encode_value(part))?;
        parts
            .into_iter()
            .enumerate()
            .map(|(node, part)| {
                decode_value(&part, &node_name(node), &format!("part of round {round}"))
            })
            .collect()
    }

    /// A round that only node 0 learns: contributes `part`; node 0 gets
    /// every node's part by id, the others `None` once node 0 has them all.
    /// (A history of a large check goes to node 0 only, not to everyone.)
    ///
    /// # Errors
    /// As [`Bootstrap::exchange`].
    pub fn gather<T: Serialize + DeserializeOwned>(
        &mut self,
        round: &str,
        part: &T,
    ) -> Result<Option<Vec<T>>> {
        let Some(parts) = self.round(round, encode_value(part), false)? else {
            return Ok(None);
        };
        parts
            .into_iter()
            .enumerate()
            .map(|(node, part)| {
                decode_value(&part, &node_name(node), &format!("part of round {round}"))
            })
            .collect::<Result<Vec<T>>>()
            .map(Some)
    }

    /// [`Bootstrap::gather`] of parts kept as JSON text: node 0 can pass
    /// them on without decoding them.
    ///
    /// # Errors
    /// As [`Bootstrap::exchange`].
    pub fn gather_payloads(&mut self, round: &str, part: Payload) -> Result<Option<Vec<Payload>>> {
        self.round(round, part, false)
    }

    fn exchange_values(&mut self, round: &str, part: Payload) -> Result<Vec<Payload>> {
        Ok(self
            .round(round, part, true)?
            .expect("every node learns the parts of an exchange"))
    }

    /// One round: every node's part reaches node 0, which answers every
    /// node with all of them (`share`) or just that it has them.
    fn round(&mut self, round: &str, part: Payload, share: bool) -> Result<Option<Vec<Payload>>> {
        if let Some(coordinator) = &mut self.coordinator {
            write_message(
                coordinator.get_mut(),
                &ToNode0::Part {
                    round: round.to_string(),
                    node: self.id,
                    part,
                },
                "node 0",
            )?;
            return match read_message::<FromNode0>(coordinator, "node 0")? {
                FromNode0::Refused { error } => Err(Error::peer("node 0", error)),
                FromNode0::Parts {
                    round: answered, ..
                } if answered != round => Err(Error::peer(
                    "node 0",
                    format!("answered round {answered} to round {round}"),
                )),
                FromNode0::Parts { parts, .. }
                    if parts.len() > self.nodes
                        || (!self.tolerant && parts.len() != self.nodes) =>
                {
                    Err(Error::peer(
                        "node 0",
                        format!("sent {} parts for {} nodes", parts.len(), self.nodes),
                    ))
                }
                FromNode0::Parts { parts, .. } if share => Ok(Some(parts)),
                FromNode0::Gathered { round: answered } if !share && answered == round => Ok(None),
                other => Err(Error::peer(
                    "node 0",
                    format!("answered round {round} with {other:?}"),
                )),
            };
        }
        let mut parts = vec![part];
        for peer in 1..self.nodes {
            let name = node_name(peer);
            let Some(reader) = self.peers[peer].as_mut() else {
                continue;
            };
            let message = match read_message::<ToNode0>(reader, &name) {
                Ok(message) => message,
                Err(error) => {
                    self.depart(peer, error)?;
                    continue;
                }
            };
            let reader = self.peers[peer].as_mut().expect("present");
            match message {
                ToNode0::Failed { error, .. } => {
                    return Err(Error::NodeFailed { node: peer, error })
                }
                ToNode0::Part {
                    round: sent,
                    node,
                    part,
                } if sent == round && node == peer => parts.push(part),
                ToNode0::Part {
                    round: sent, node, ..
                } => {
                    let _ = write_message(
                        reader.get_mut(),
                        &FromNode0::Refused {
                            error: format!("expected round {round}"),
                        },
                        &name,
                    );
                    return Err(Error::peer(
                        &name,
                        format!("sent a part of round {sent} as node {node} during round {round}"),
                    ));
                }
            }
        }
        let answer = if share {
            FromNode0::Parts {
                round: round.to_string(),
                parts: parts.clone(),
            }
        } else {
            FromNode0::Gathered {
                round: round.to_string(),
            }
        };
        for peer in 1..self.nodes {
            let Some(reader) = self.peers[peer].as_mut() else {
                continue;
            };
            if let Err(error) = write_message(reader.get_mut(), &answer, &node_name(peer)) {
                self.depart(peer, error)?;
            }
        }
        Ok(Some(parts))
    }
}
