//! The driver's side of [`crate::protocol`]: asks the node processes of a
//! cluster (through node 0) to run a service's request, passes status and
//! progress on as they come, and returns the service's outputs.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::protocol::{
    decode_value, encode_value, read_message, write_message, Opening, Progress, ToDriver,
    PROTOCOL_VERSION,
};

/// What node 0 says while a request runs.
#[derive(Clone, Debug)]
pub enum Event {
    Status(String),
    Progress(Progress),
}

/// Where and how patiently to drive a cluster.
#[derive(Clone, Copy, Debug)]
pub struct Driver {
    /// Node 0's bootstrap address.
    pub address: SocketAddr,
    /// How long to keep trying while the nodes start.
    pub wait: Duration,
    /// How long a request may run before the driver gives up on it.
    pub answer_within: Duration,
}

impl Driver {
    /// Asks every node to run `service` with `request`; calls `on_event`
    /// for what node 0 says meanwhile; returns the service's outputs (one
    /// per run of a sweep).
    ///
    /// # Errors
    /// [`Error::Service`] with the cluster's reason when the request
    /// failed; [`Error::Peer`] when node 0 cannot be reached, went away or
    /// spoke garbage.
    pub fn run<R: Serialize, O: DeserializeOwned>(
        &self,
        service: &str,
        request: &R,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Vec<O>> {
        self.run_watched(service, request, on_event, &mut || true)
    }

    /// [`Driver::run`], giving up the wait for the nodes to start as soon as
    /// `alive` says they are gone (a launcher's processes that exited).
    ///
    /// # Errors
    /// As [`Driver::run`].
    pub fn run_watched<R: Serialize, O: DeserializeOwned>(
        &self,
        service: &str,
        request: &R,
        on_event: &mut dyn FnMut(&Event),
        alive: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<O>> {
        let opening = Opening::Run {
            protocol: PROTOCOL_VERSION,
            service: service.to_string(),
            request: encode_value(request),
        };
        let peer = format!("node 0 at {}", self.address);
        let mut outputs = Vec::new();
        let (first, mut reader) = self.open(&opening, alive)?;
        let mut next = Some(first);
        loop {
            let message = match next.take() {
                Some(message) => message,
                None => read_message::<ToDriver>(&mut reader, &peer)?,
            };
            match message {
                ToDriver::Starting => {
                    return Err(Error::peer(
                        &peer,
                        "said it is starting after accepting the request",
                    ))
                }
                ToDriver::Status { text } => on_event(&Event::Status(text)),
                ToDriver::Progress(progress) => on_event(&Event::Progress(progress)),
                ToDriver::Output { value } => outputs.push(decode_value(&value, &peer, "output")?),
                ToDriver::Done => return Ok(outputs),
                ToDriver::Error { error } => {
                    return Err(Error::Service {
                        service: service.to_string(),
                        error: format!("the cluster failed the request: {error}"),
                    })
                }
            }
        }
    }

    /// Asks the node processes to finish and exit.
    ///
    /// # Errors
    /// As [`Driver::run`].
    pub fn stop(&self) -> Result<()> {
        let peer = format!("node 0 at {}", self.address);
        let (first, _) = self.open(
            &Opening::Stop {
                protocol: PROTOCOL_VERSION,
            },
            &mut || true,
        )?;
        match first {
            ToDriver::Done => Ok(()),
            ToDriver::Error { error } => Err(Error::peer(&peer, error)),
            other => Err(Error::peer(
                &peer,
                format!("answered a stop with {other:?}"),
            )),
        }
    }

    /// Connects and sends `opening`, retrying while the nodes start
    /// (connection refused, or node 0 answering that it is starting);
    /// returns node 0's first answer and the connection.
    fn open(
        &self,
        opening: &Opening,
        alive: &mut dyn FnMut() -> bool,
    ) -> Result<(ToDriver, BufReader<TcpStream>)> {
        let peer = format!("node 0 at {}", self.address);
        let deadline = Instant::now() + self.wait;
        loop {
            let gone = !alive();
            let retry = |error: &dyn std::fmt::Display| {
                if gone {
                    Err(Error::peer(
                        &peer,
                        format!("{error}, and the nodes are gone"),
                    ))
                } else if Instant::now() > deadline {
                    Err(Error::peer(
                        &peer,
                        format!("{error} (waited {:?})", self.wait),
                    ))
                } else {
                    std::thread::sleep(Duration::from_millis(100));
                    Ok(())
                }
            };
            let mut stream =
                match TcpStream::connect_timeout(&self.address, Duration::from_secs(10)) {
                    Ok(stream) => stream,
                    Err(error) => {
                        retry(&error)?;
                        continue;
                    }
                };
            stream
                .set_read_timeout(Some(self.answer_within))
                .map_err(|e| Error::peer(&peer, e))?;
            write_message(&mut stream, opening, &peer)?;
            let mut reader = BufReader::new(stream);
            // The first answer says whether the nodes are still starting.
            match read_message(&mut reader, &peer)? {
                ToDriver::Starting => retry(&"the nodes are still starting")?,
                first => return Ok((first, reader)),
            }
        }
    }
}
