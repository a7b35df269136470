//! Every message between node processes and their drivers, as typed,
//! versioned enums; one JSON value per line on a TCP connection to node
//! 0's `bootstrap` address.
//!
//! ```text
//! node k → node 0   {"join":{"protocol":1,"node":k,"shape":{…}}}       first line
//!                   {"part":{"round":"…","node":k,"part":…}}           one per round
//!                   {"failed":{"node":k,"error":"…"}}                  when it gives up
//! node 0 → node k   {"parts":{"round":"…","parts":[…]}}               every node's part
//!                   {"gathered":{"round":"…"}}                        a gathering round's end
//!                   {"refused":{"error":"…"}}
//!
//! driver → node 0   {"run":{"protocol":1,"service":"bench","request":{…}}}
//!                   {"stop":{"protocol":1}}
//! node 0 → driver   "starting"                                        nodes still joining
//!                   {"status":{"text":"loading tatp …"}}
//!                   {"progress":{"run":0,"done":3.0,"total":10.0,"unit":"s","rate":61234.0}}
//!                   {"output":{"value":{…}}}                          a service's result
//!                   "done"  or  {"error":{"error":"…"}}
//! ```
//!
//! A round's part and a service's request and output are the service's own
//! types, carried here as [`Payload`]s: JSON text that is passed through
//! untouched and decoded once, by whoever knows its type (a history of a
//! large check is tens of MiB). A line is at most [`LINE_BYTES_MAX`];
//! anything that is not one of these messages gets an error that names the
//! peer, and nothing else happens.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// A service's own value (a round's part, a request, an output) as JSON
/// text.
pub type Payload = Box<RawValue>;

/// The version of these messages; a peer with another is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line a peer may send (a history of a large check is tens of
/// MiB).
pub const LINE_BYTES_MAX: u64 = 1 << 30;

/// The first line of a connection to node 0.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Opening {
    /// A node process joins the cluster at start-up, with what its cluster
    /// file says about the cluster.
    Join {
        protocol: u32,
        node: usize,
        shape: ClusterShape,
    },
    /// A driver asks every node to run `service` with `request`.
    Run {
        protocol: u32,
        service: String,
        request: Payload,
    },
    /// A driver asks the nodes to finish and exit.
    Stop { protocol: u32 },
}

impl Opening {
    pub fn protocol(&self) -> u32 {
        match self {
            Opening::Join { protocol, .. }
            | Opening::Run { protocol, .. }
            | Opening::Stop { protocol } => *protocol,
        }
    }
}

/// What every node's cluster file must agree on: node 0 refuses a node
/// whose file says otherwise, naming the field and both values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterShape {
    pub fabric: farm_core::FabricKind,
    pub copies: usize,
    pub regions_per_node: usize,
    pub region_bytes: u64,
    pub nodes: Vec<crate::cluster_file::NodeEntry>,
}

impl ClusterShape {
    /// The cluster `file` describes.
    pub fn of(file: &crate::cluster_file::ClusterFile) -> ClusterShape {
        ClusterShape {
            fabric: file.fabric,
            copies: file.copies,
            regions_per_node: file.regions_per_node,
            region_bytes: file.region_bytes,
            nodes: file.nodes.clone(),
        }
    }

    /// The first field on which `theirs` differs from this shape: (field,
    /// ours, theirs).
    pub fn difference(&self, theirs: &ClusterShape) -> Option<(&'static str, String, String)> {
        let fields = [
            ("fabric", self.fabric.to_string(), theirs.fabric.to_string()),
            ("copies", self.copies.to_string(), theirs.copies.to_string()),
            (
                "regions_per_node",
                self.regions_per_node.to_string(),
                theirs.regions_per_node.to_string(),
            ),
            (
                "region_bytes",
                self.region_bytes.to_string(),
                theirs.region_bytes.to_string(),
            ),
            (
                "the number of nodes",
                self.nodes.len().to_string(),
                theirs.nodes.len().to_string(),
            ),
        ];
        if let Some(found) = fields.into_iter().find(|(_, ours, theirs)| ours != theirs) {
            return Some(found);
        }
        self.nodes
            .iter()
            .zip(&theirs.nodes)
            .find(|(ours, theirs)| ours != theirs)
            .map(|(ours, theirs)| {
                let show = |n: &crate::cluster_file::NodeEntry| match n.verbs {
                    Some(verbs) => format!("bootstrap {} verbs {verbs}", n.bootstrap),
                    None => format!("bootstrap {}", n.bootstrap),
                };
                (
                    "the node list",
                    format!("node {}: {}", ours.id, show(ours)),
                    format!("node {}: {}", theirs.id, show(theirs)),
                )
            })
    }
}

/// What a node sends node 0 after joining.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ToNode0 {
    /// Its part of a round.
    Part {
        round: String,
        node: usize,
        part: Payload,
    },
    /// It gives up, and why.
    Failed { node: usize, error: String },
}

/// What node 0 sends a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum FromNode0 {
    /// Every node's part of a round, by node id.
    Parts { round: String, parts: Vec<Payload> },
    /// Node 0 has every part of a round that gathers them to it alone.
    Gathered { round: String },
    /// Node 0 refused what the node sent, or failed.
    Refused { error: String },
}

/// How far a long request has come.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Which run of the request (a sweep runs several).
    pub run: usize,
    pub done: f64,
    pub total: f64,
    /// What `done` and `total` count ("s", "txns").
    pub unit: String,
    /// Node 0's rate, per second.
    pub rate: f64,
}

/// What node 0 sends a driver.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ToDriver {
    /// The nodes are still joining: try again.
    Starting,
    Status {
        text: String,
    },
    Progress(Progress),
    /// A result of the service (one per run of a sweep).
    Output {
        value: Payload,
    },
    /// The request is done.
    Done,
    Error {
        error: String,
    },
}

/// Reads one message from `reader`, sent by `peer`.
///
/// # Errors
/// [`Error::Peer`] when the connection closed or failed, the line is too
/// long, or it is not a `T`.
pub fn read_message<T: DeserializeOwned>(reader: &mut impl BufRead, peer: &str) -> Result<T> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(LINE_BYTES_MAX + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::peer(peer, e))?;
    if read == 0 {
        return Err(Error::peer(peer, "connection closed"));
    }
    if line.len() as u64 > LINE_BYTES_MAX {
        return Err(Error::peer(
            peer,
            format!("sent a line longer than {LINE_BYTES_MAX} bytes"),
        ));
    }
    serde_json::from_slice(&line).map_err(|e| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)])
            .trim()
            .to_string();
        Error::peer(
            peer,
            format!("sent something that is not a farm message ({e}): {shown}"),
        )
    })
}

/// Writes one message to `stream`, for `peer`.
///
/// # Errors
/// [`Error::Peer`] when the connection failed.
pub fn write_message<T: Serialize>(stream: &mut TcpStream, message: &T, peer: &str) -> Result<()> {
    let mut line = serde_json::to_vec(message).expect("farm messages serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| Error::peer(peer, e))
}

/// A part or request as the service's own type.
///
/// # Errors
/// [`Error::Peer`] naming `peer` and `what` when it is not a `T`.
pub fn decode_value<T: DeserializeOwned>(value: &RawValue, peer: &str, what: &str) -> Result<T> {
    serde_json::from_str(value.get())
        .map_err(|e| Error::peer(peer, format!("sent a malformed {what}: {e}")))
}

/// A value of the service's own type, as a message carries it.
pub fn encode_value<T: Serialize>(value: &T) -> Payload {
    serde_json::value::to_raw_value(value).expect("farm messages serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_look_as_documented() {
        let run = Opening::Run {
            protocol: PROTOCOL_VERSION,
            service: "bench".into(),
            request: encode_value(&serde_json::json!({"workload": "tatp"})),
        };
        let text = serde_json::to_string(&run).unwrap();
        assert_eq!(
            text,
            r#"{"run":{"protocol":1,"service":"bench","request":{"workload":"tatp"}}}"#
        );
        assert_eq!(
            serde_json::to_string(&serde_json::from_str::<Opening>(&text).unwrap()).unwrap(),
            text
        );
        let progress = ToDriver::Progress(Progress {
            run: 0,
            done: 3.0,
            total: 10.0,
            unit: "s".into(),
            rate: 5.0,
        });
        let text = serde_json::to_string(&progress).unwrap();
        assert!(text.starts_with(r#"{"progress":{"run":0"#), "{text}");
        assert_eq!(
            serde_json::to_string(&serde_json::from_str::<ToDriver>(&text).unwrap()).unwrap(),
            text
        );
        for garbage in [
            r#"{"type":"run"}"#,
            r#"{"bench":{}}"#,
            r#"{"type":"stop","protocol":1,"x":2}"#,
        ] {
            assert!(
                serde_json::from_str::<Opening>(garbage).is_err(),
                "{garbage}"
            );
        }
    }
}
