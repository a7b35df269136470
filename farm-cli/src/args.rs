//! Argument groups that several subcommands share.

use farm_core::{FabricKind, VerbsDevice};

/// Which fabric the nodes talk over, and (verbs) on which device.
#[derive(Clone, Debug, clap::Args)]
pub struct FabricArgs {
    /// shm (shared memory between the threads or processes of one host)
    /// or verbs (RDMA NICs, soft-RoCE; needs a build with `--features
    /// verbs`).
    #[arg(long, default_value = "shm")]
    pub fabric: FabricKind,
    #[command(flatten)]
    pub verbs: VerbsArgs,
}

/// Which RDMA device and GID a verbs node uses (ignored by shm).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct VerbsArgs {
    /// Verbs: the RDMA device (default: the first one).
    #[arg(long, short = 'd')]
    pub device: Option<String>,
    /// Verbs: the GID index (default: the port's IPv4-mapped RoCE v2 GID).
    #[arg(long, short = 'x')]
    pub gid_index: Option<u8>,
}

impl VerbsArgs {
    pub fn device(&self) -> VerbsDevice {
        VerbsDevice {
            device: self.device.clone(),
            gid_index: self.gid_index,
        }
    }
}
