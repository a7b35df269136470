//! Argument groups that several subcommands share.

use farm_core::VerbsDevice;

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
