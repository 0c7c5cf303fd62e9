//! Linux capabilities: names, sets, and the CRI add/drop rules.
//!
//! The default set is containerd's (14 capabilities, `MKNOD` included; CRI-O
//! drops `MKNOD`, containerd keeps it, and so does krio). `add_capabilities`
//! and `drop_capabilities` follow containerd's order: `ALL` on either side
//! first, then the individual additions, then the individual drops, so
//! `drop: [ALL], add: [NET_ADMIN]` leaves only `NET_ADMIN`. Names are accepted
//! with or without the `CAP_` prefix, in any case; an unknown name is an
//! invalid argument.
//!
//! Nothing is ever granted that krio itself does not hold: asking runc for a
//! capability outside its own bounding set makes the container fail to start,
//! so every set is intersected with the host's set (and a warning names what
//! was left out).

use std::collections::HashSet;

use krio_proto::v1;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// A capability name the CRI config asked for that Linux does not know.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// An `add_capabilities` / `drop_capabilities` / `add_ambient_capabilities` entry is unknown.
    #[error(
        "{field}: unknown capability {name:?} (expected a Linux capability name such as NET_ADMIN or CAP_NET_ADMIN, or ALL)"
    )]
    Unknown {
        /// The CRI field the name came from.
        field: &'static str,
        /// The name as given.
        name: String,
    },
}

/// Every capability Linux defines, by bit number (`CAP_CHOWN` is bit 0).
const TABLE: [(&str, Capability); 41] = [
    ("CHOWN", Capability::Chown),
    ("DAC_OVERRIDE", Capability::DacOverride),
    ("DAC_READ_SEARCH", Capability::DacReadSearch),
    ("FOWNER", Capability::Fowner),
    ("FSETID", Capability::Fsetid),
    ("KILL", Capability::Kill),
    ("SETGID", Capability::Setgid),
    ("SETUID", Capability::Setuid),
    ("SETPCAP", Capability::Setpcap),
    ("LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("NET_BIND_SERVICE", Capability::NetBindService),
    ("NET_BROADCAST", Capability::NetBroadcast),
    ("NET_ADMIN", Capability::NetAdmin),
    ("NET_RAW", Capability::NetRaw),
    ("IPC_LOCK", Capability::IpcLock),
    ("IPC_OWNER", Capability::IpcOwner),
    ("SYS_MODULE", Capability::SysModule),
    ("SYS_RAWIO", Capability::SysRawio),
    ("SYS_CHROOT", Capability::SysChroot),
    ("SYS_PTRACE", Capability::SysPtrace),
    ("SYS_PACCT", Capability::SysPacct),
    ("SYS_ADMIN", Capability::SysAdmin),
    ("SYS_BOOT", Capability::SysBoot),
    ("SYS_NICE", Capability::SysNice),
    ("SYS_RESOURCE", Capability::SysResource),
    ("SYS_TIME", Capability::SysTime),
    ("SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("MKNOD", Capability::Mknod),
    ("LEASE", Capability::Lease),
    ("AUDIT_WRITE", Capability::AuditWrite),
    ("AUDIT_CONTROL", Capability::AuditControl),
    ("SETFCAP", Capability::Setfcap),
    ("MAC_OVERRIDE", Capability::MacOverride),
    ("MAC_ADMIN", Capability::MacAdmin),
    ("SYSLOG", Capability::Syslog),
    ("WAKE_ALARM", Capability::WakeAlarm),
    ("BLOCK_SUSPEND", Capability::BlockSuspend),
    ("AUDIT_READ", Capability::AuditRead),
    ("PERFMON", Capability::Perfmon),
    ("BPF", Capability::Bpf),
    ("CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// containerd's default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of Linux capabilities, as a bit mask (bit N = capability N, the
/// layout of `CapBnd:` in `/proc/<pid>/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CapabilitySet(u64);

impl CapabilitySet {
    /// The empty set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every capability Linux defines (and krio knows by name).
    pub const fn all_known() -> Self {
        Self((1u64 << TABLE.len()) - 1)
    }

    /// A set from a `/proc/<pid>/status` style mask; unknown bits are dropped.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits & Self::all_known().0)
    }

    /// The mask.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `name` (with or without `CAP_`, any case) is in the set.
    pub fn contains(self, name: &str) -> bool {
        bit_of(name).is_some_and(|bit| self.0 & (1 << bit) != 0)
    }

    /// A set from capability names (with or without `CAP_`, any case).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, CapabilityError> {
        let mut set = Self::empty();
        for name in names {
            set = set.with(parse("capabilities", name.as_ref())?);
        }
        Ok(set)
    }

    /// containerd's default set (see [`DEFAULT_CAPABILITIES`]).
    pub fn defaults() -> Self {
        DEFAULT_CAPABILITIES
            .iter()
            .filter_map(|name| bit_of(name))
            .fold(Self::empty(), Self::with)
    }

    /// The capability names in the set, `CAP_`-prefixed, in bit order.
    pub fn names(self) -> Vec<String> {
        TABLE
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, (name, _))| format!("CAP_{name}"))
            .collect()
    }

    /// The effective set krio holds, from the text of `/proc/self/status`:
    /// `CapBnd` ∩ `CapEff` (runc can grant neither more than its bounding
    /// set nor more than it holds). `None` when the lines are missing.
    pub fn from_proc_status(status: &str) -> Option<Self> {
        let field = |key: &str| {
            status.lines().find_map(|line| {
                let value = line.strip_prefix(key)?.trim();
                u64::from_str_radix(value, 16).ok()
            })
        };
        let bounding = field("CapBnd:")?;
        let effective = field("CapEff:")?;
        Some(Self::from_bits(bounding & effective))
    }

    fn with(self, bit: u8) -> Self {
        Self(self.0 | (1 << bit))
    }

    fn without(self, bit: u8) -> Self {
        Self(self.0 & !(1 << bit))
    }

    fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    fn to_oci(self) -> Capabilities {
        TABLE
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, (_, cap))| *cap)
            .collect::<HashSet<_>>()
    }
}

fn bit_of(name: &str) -> Option<u8> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    TABLE
        .iter()
        .position(|(known, _)| *known == bare)
        .and_then(|bit| u8::try_from(bit).ok())
}

fn parse(field: &'static str, name: &str) -> Result<u8, CapabilityError> {
    bit_of(name).ok_or_else(|| CapabilityError::Unknown {
        field,
        name: name.to_owned(),
    })
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The capability set a container gets: privileged → everything krio holds;
/// otherwise the defaults with the CRI additions and drops applied, limited
/// to what krio holds. Returns the bounding set and the ambient set.
pub(crate) fn resolve(
    requested: Option<&v1::Capability>,
    privileged: bool,
    host: CapabilitySet,
) -> Result<(CapabilitySet, CapabilitySet), CapabilityError> {
    if privileged {
        return Ok((host, CapabilitySet::empty()));
    }
    let mut caps = CapabilitySet::defaults();
    let mut ambient = CapabilitySet::empty();
    if let Some(requested) = requested {
        if requested.add_capabilities.iter().any(|n| is_all(n)) {
            caps = CapabilitySet::all_known();
        }
        if requested.drop_capabilities.iter().any(|n| is_all(n)) {
            caps = CapabilitySet::empty();
        }
        for name in requested.add_capabilities.iter().filter(|n| !is_all(n)) {
            caps = caps.with(parse("add_capabilities", name)?);
        }
        for name in requested.drop_capabilities.iter().filter(|n| !is_all(n)) {
            caps = caps.without(parse("drop_capabilities", name)?);
        }
        for name in &requested.add_ambient_capabilities {
            let bit = parse("add_ambient_capabilities", name)?;
            caps = caps.with(bit);
            ambient = ambient.with(bit);
        }
    }
    let missing = caps.difference(host);
    if !missing.is_empty() {
        tracing::warn!(
            capabilities = ?missing.names(),
            "leaving out capabilities that krio itself does not hold"
        );
    }
    Ok((caps.intersect(host), ambient.intersect(host)))
}

/// The OCI capability sets for a bounding set and an ambient set: bounding,
/// effective and permitted get `caps`; inheritable and ambient get only the
/// ambient capabilities (the kernel keeps an ambient capability only when it
/// is also inheritable).
pub(crate) fn to_oci(caps: CapabilitySet, ambient: CapabilitySet) -> LinuxCapabilities {
    let mut out = LinuxCapabilities::default();
    out.set_bounding(Some(caps.to_oci()));
    out.set_effective(Some(caps.to_oci()));
    out.set_permitted(Some(caps.to_oci()));
    out.set_inheritable(Some(ambient.to_oci()));
    out.set_ambient(Some(ambient.to_oci()));
    out
}
