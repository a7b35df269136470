//! Access flags of a memory registration, in verbs terms.

use std::fmt;

/// What the local CPU and remote peers may do with a registered range.
///
/// A newtype over the bit set rather than a raw integer so that a caller
/// cannot pass a verbs flag word by accident; [`Access::verbs_bits`] converts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u8);

impl Access {
    /// The local NIC may write into the range (the target of a READ or the
    /// result of an atomic). Verbs requires it for any remote write access.
    pub const LOCAL_WRITE: Access = Access(1);
    pub const REMOTE_READ: Access = Access(2);
    pub const REMOTE_WRITE: Access = Access(4);
    pub const REMOTE_ATOMIC: Access = Access(8);
    pub const NONE: Access = Access(0);
    /// Everything: what FaRM's region memory is registered with.
    pub const ALL: Access = Access(15);

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Decodes a bit set from the wire or from a registration file; unknown
    /// bits are an error so that a garbled peer is noticed.
    pub fn from_bits(bits: u8) -> Option<Access> {
        (bits & !Self::ALL.0 == 0).then_some(Access(bits))
    }

    pub const fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }

    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when a peer may touch the range at all.
    pub const fn is_remote(self) -> bool {
        self.0 & (Self::REMOTE_READ.0 | Self::REMOTE_WRITE.0 | Self::REMOTE_ATOMIC.0) != 0
    }

    /// The `ibv_access_flags` word for this set (values from `verbs.h`).
    pub const fn verbs_bits(self) -> u32 {
        let mut bits = 0;
        if self.0 & Self::LOCAL_WRITE.0 != 0 {
            bits |= 1;
        }
        if self.0 & Self::REMOTE_WRITE.0 != 0 {
            bits |= 2;
        }
        if self.0 & Self::REMOTE_READ.0 != 0 {
            bits |= 4;
        }
        if self.0 & Self::REMOTE_ATOMIC.0 != 0 {
            bits |= 8;
        }
        bits
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        self.union(rhs)
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::LOCAL_WRITE, "local-write"),
            (Self::REMOTE_READ, "remote-read"),
            (Self::REMOTE_WRITE, "remote-write"),
            (Self::REMOTE_ATOMIC, "remote-atomic"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_and_reject_unknown() {
        for bits in 0..=255u8 {
            match Access::from_bits(bits) {
                Some(access) => assert_eq!(access.bits(), bits),
                None => assert!(bits > 15),
            }
        }
        assert_eq!(Access::ALL.verbs_bits(), 15);
        assert_eq!(Access::REMOTE_READ.verbs_bits(), 4);
        assert_eq!(
            format!("{}", Access::REMOTE_READ | Access::REMOTE_ATOMIC),
            "remote-read|remote-atomic"
        );
    }
}
