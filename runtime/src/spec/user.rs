//! Who the container's process runs as: `run_as_user`, `run_as_username`,
//! `run_as_group`, the image's `USER`, resolved against the image's own
//! `/etc/passwd` and `/etc/group` (read with [`super::rootfs`]), plus the
//! supplemental groups under the `Merge` / `Strict` policy.
//!
//! Rules (the CRI's and containerd's):
//! - `run_as_user` and `run_as_username` are exclusive; `run_as_group` needs
//!   one of them.
//! - A numeric uid needs no passwd entry (gid 0 then); a name must exist.
//! - The primary gid is `run_as_group`, else the image USER's group part,
//!   else the passwd entry's gid, else 0.
//! - Supplemental groups (the OCI `additionalGids`) are the primary gid,
//!   then (policy `Merge`, the default) every `/etc/group` entry that lists
//!   the user's name, then `supplemental_groups`, without duplicates.

use std::path::Path;

use krio_proto::v1;

use super::rootfs::{self, MAX_ETC_FILE_BYTES, RootfsError};

/// The most supplemental groups Linux accepts (`NGROUPS_MAX`).
const NGROUPS_MAX: usize = 65536;

/// The identity the container's first process gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplemental gids, the primary gid first (what `ContainerStatus.user` reports).
    pub additional_gids: Vec<u32>,
    /// The user's name in the image's `/etc/passwd`, when it has an entry.
    pub username: Option<String>,
}

/// The user part of the config cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// `run_as_group` without `run_as_user` / `run_as_username`.
    #[error("security_context.run_as_group is set without run_as_user or run_as_username")]
    GroupWithoutUser,
    /// Both `run_as_user` and `run_as_username`.
    #[error("security_context.run_as_user and run_as_username are both set; set only one")]
    UserAndUsername,
    /// A uid or gid outside 0..=4294967294.
    #[error("{field}: {value} is not a valid Linux id (0 to 4294967294)")]
    IdOutOfRange {
        /// The CRI field.
        field: &'static str,
        /// The value given.
        value: i64,
    },
    /// A user name that the image's `/etc/passwd` does not have.
    #[error("{field}: user {name:?} does not exist in the image's /etc/passwd")]
    UnknownUser {
        /// Where the name came from.
        field: &'static str,
        /// The name.
        name: String,
    },
    /// A group name that the image's `/etc/group` does not have.
    #[error("image USER: group {name:?} does not exist in the image's /etc/group")]
    UnknownGroup {
        /// The name.
        name: String,
    },
    /// An image `USER` that is not `user`, `uid`, `user:group` or `uid:gid`.
    #[error("image USER {value:?} is malformed (expected user, uid, user:group or uid:gid)")]
    BadImageUser {
        /// The value.
        value: String,
    },
    /// More supplemental groups than Linux allows.
    #[error("{count} supplemental groups; Linux allows at most {NGROUPS_MAX}")]
    TooManyGroups {
        /// How many there were.
        count: usize,
    },
    /// `/etc/passwd` or `/etc/group` could not be read safely.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
}

/// One `/etc/passwd` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One `/etc/group` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parses `/etc/passwd`, skipping malformed and NIS (`+`/`-`) lines.
pub(crate) fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|line| !line.starts_with(['#', '+', '-']))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_owned(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields.get(5).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// Parses `/etc/group`, skipping malformed and NIS lines.
pub(crate) fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|line| !line.starts_with(['#', '+', '-']))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 3 || fields[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: fields[0].to_owned(),
                gid: fields[2].parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The image's user database, read once per container.
pub(crate) struct UserDb {
    passwd: Vec<PasswdEntry>,
    group: Vec<GroupEntry>,
}

impl UserDb {
    /// Reads `/etc/passwd` and `/etc/group` from the rootfs (missing = empty).
    pub(crate) fn load(rootfs: &Path) -> Result<Self, RootfsError> {
        let passwd = rootfs::read_in_root(rootfs, "etc/passwd", MAX_ETC_FILE_BYTES)?;
        let group = rootfs::read_in_root(rootfs, "etc/group", MAX_ETC_FILE_BYTES)?;
        Ok(Self {
            passwd: passwd.as_deref().map(parse_passwd).unwrap_or_default(),
            group: group.as_deref().map(parse_group).unwrap_or_default(),
        })
    }

    fn by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|e| e.uid == uid)
    }

    fn by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|e| e.name == name)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.group.iter().find(|g| g.name == name)
    }

    fn memberships<'a>(&'a self, username: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.group
            .iter()
            .filter(move |g| g.members.iter().any(|m| m == username))
            .map(|g| g.gid)
    }
}

fn linux_id(field: &'static str, value: i64) -> Result<u32, UserError> {
    u32::try_from(value)
        .ok()
        .filter(|id| *id != u32::MAX)
        .ok_or(UserError::IdOutOfRange { field, value })
}

/// The result of resolving: the identity and the home directory for `HOME`.
pub(crate) struct Resolution {
    pub user: ResolvedUser,
    pub home: Option<String>,
}

/// Resolves the container's identity from its security context and the
/// image's `USER`, against the image's user database.
pub(crate) fn resolve(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    image_user: Option<&str>,
    db: &UserDb,
) -> Result<Resolution, UserError> {
    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_username = sc
        .map(|s| s.run_as_username.as_str())
        .filter(|s| !s.is_empty());
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);

    let (entry, uid, mut gid) = match (run_as_user, run_as_username) {
        (Some(_), Some(_)) => return Err(UserError::UserAndUsername),
        (Some(uid), None) => {
            let uid = linux_id("security_context.run_as_user", uid)?;
            let entry = db.by_uid(uid);
            (entry, uid, entry.map(|e| e.gid))
        }
        (None, Some(name)) => {
            let entry = db.by_name(name).ok_or_else(|| UserError::UnknownUser {
                field: "security_context.run_as_username",
                name: name.to_owned(),
            })?;
            (Some(entry), entry.uid, Some(entry.gid))
        }
        (None, None) => {
            if run_as_group.is_some() {
                return Err(UserError::GroupWithoutUser);
            }
            image_identity(image_user.unwrap_or_default(), db)?
        }
    };
    if let Some(group) = run_as_group {
        gid = Some(linux_id("security_context.run_as_group", group)?);
    }
    let gid = gid.unwrap_or(0);

    let strict = sc.is_some_and(|s| {
        s.supplemental_groups_policy == v1::SupplementalGroupsPolicy::Strict as i32
    });
    let mut groups = vec![gid];
    let mut push = |g: u32| {
        if !groups.contains(&g) {
            groups.push(g);
        }
    };
    if !strict && let Some(entry) = entry {
        db.memberships(&entry.name).for_each(&mut push);
    }
    for g in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        push(linux_id("security_context.supplemental_groups", *g)?);
    }
    if groups.len() > NGROUPS_MAX {
        return Err(UserError::TooManyGroups {
            count: groups.len(),
        });
    }
    Ok(Resolution {
        user: ResolvedUser {
            uid,
            gid,
            additional_gids: groups,
            username: entry.map(|e| e.name.clone()),
        },
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
    })
}

/// The image `USER`: `""`, `uid`, `name`, `uid:gid`, `name:group`, mixes.
fn image_identity<'db>(
    value: &str,
    db: &'db UserDb,
) -> Result<(Option<&'db PasswdEntry>, u32, Option<u32>), UserError> {
    let bad = || UserError::BadImageUser {
        value: value.to_owned(),
    };
    let value_trimmed = value.trim();
    if value_trimmed.is_empty() {
        let entry = db.by_uid(0);
        return Ok((entry, 0, entry.map(|e| e.gid)));
    }
    let (user, group) = match value_trimmed.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value_trimmed, None),
    };
    if user.is_empty() || group.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return Err(bad());
    }
    let (entry, uid) = match user.parse::<u32>() {
        Ok(uid) if uid != u32::MAX => (db.by_uid(uid), uid),
        Ok(_) => return Err(bad()),
        Err(_) => {
            let entry = db.by_name(user).ok_or_else(|| UserError::UnknownUser {
                field: "image USER",
                name: user.to_owned(),
            })?;
            (Some(entry), entry.uid)
        }
    };
    let gid = match group {
        None => entry.map(|e| e.gid),
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) if gid != u32::MAX => gid,
            Ok(_) => return Err(bad()),
            Err(_) => {
                db.group_by_name(g)
                    .ok_or_else(|| UserError::UnknownGroup { name: g.to_owned() })?
                    .gid
            }
        }),
    };
    Ok((entry, uid, gid))
}

#[cfg(test)]
impl UserDb {
    pub(crate) fn from_text(passwd: &str, group: &str) -> Self {
        Self {
            passwd: parse_passwd(passwd),
            group: parse_group(group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        # comment\n\
        broken line\n\
        +nis\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nnogroup:x:65534:\n\
        app:x:1000:\nextra:x:50000:app\nbad:x:notanumber:app\n";

    fn db() -> UserDb {
        UserDb::from_text(PASSWD, GROUP)
    }

    fn sc() -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext::default()
    }

    #[test]
    fn parsers_skip_junk() {
        assert_eq!(parse_passwd(PASSWD).len(), 3);
        let groups = parse_group(GROUP);
        assert_eq!(groups.len(), 5);
        assert_eq!(groups[1].members, vec!["root", "app"]);
    }

    #[test]
    fn default_is_root_with_image_groups() {
        let r = resolve(None, None, &db()).expect("resolve");
        assert_eq!((r.user.uid, r.user.gid), (0, 0));
        assert_eq!(r.user.additional_gids, vec![0, 10]);
        assert_eq!(r.user.username.as_deref(), Some("root"));
        assert_eq!(r.home.as_deref(), Some("/root"));
    }

    #[test]
    fn merge_policy_adds_image_groups_and_explicit_ones() {
        let mut s = sc();
        s.run_as_user = Some(v1::Int64Value { value: 1000 });
        s.supplemental_groups = vec![1234];
        let r = resolve(Some(&s), None, &db()).expect("resolve");
        assert_eq!((r.user.uid, r.user.gid), (1000, 1000));
        assert_eq!(r.user.additional_gids, vec![1000, 10, 50000, 1234]);
    }

    #[test]
    fn strict_policy_keeps_only_explicit_groups() {
        let mut s = sc();
        s.run_as_user = Some(v1::Int64Value { value: 1000 });
        s.supplemental_groups = vec![1234, 1234];
        s.supplemental_groups_policy = v1::SupplementalGroupsPolicy::Strict as i32;
        let r = resolve(Some(&s), None, &db()).expect("resolve");
        assert_eq!(r.user.additional_gids, vec![1000, 1234]);
    }

    #[test]
    fn uid_without_entry_gets_gid_zero() {
        let mut s = sc();
        s.run_as_user = Some(v1::Int64Value { value: 4242 });
        let r = resolve(Some(&s), None, &db()).expect("resolve");
        assert_eq!((r.user.uid, r.user.gid), (4242, 0));
        assert_eq!(r.user.username, None);
        assert_eq!(r.home, None);
    }

    #[test]
    fn run_as_group_overrides_and_needs_a_user() {
        let mut s = sc();
        s.run_as_user = Some(v1::Int64Value { value: 1001 });
        s.run_as_group = Some(v1::Int64Value { value: 1002 });
        let r = resolve(Some(&s), None, &db()).expect("resolve");
        assert_eq!((r.user.uid, r.user.gid), (1001, 1002));

        let mut s = sc();
        s.run_as_group = Some(v1::Int64Value { value: 1002 });
        assert!(matches!(
            resolve(Some(&s), Some("app"), &db()),
            Err(UserError::GroupWithoutUser)
        ));
    }

    #[test]
    fn username_must_exist() {
        let mut s = sc();
        s.run_as_username = "nobody".into();
        let r = resolve(Some(&s), None, &db()).expect("resolve");
        assert_eq!((r.user.uid, r.user.gid), (65534, 65534));
        s.run_as_username = "ghost".into();
        assert!(matches!(
            resolve(Some(&s), None, &db()),
            Err(UserError::UnknownUser { .. })
        ));
    }

    #[test]
    fn user_and_username_are_exclusive() {
        let mut s = sc();
        s.run_as_username = "nobody".into();
        s.run_as_user = Some(v1::Int64Value { value: 1 });
        assert!(matches!(
            resolve(Some(&s), None, &db()),
            Err(UserError::UserAndUsername)
        ));
    }

    #[test]
    fn ids_out_of_range_are_rejected() {
        for bad in [-1, i64::from(u32::MAX), 1 << 40] {
            let mut s = sc();
            s.run_as_user = Some(v1::Int64Value { value: bad });
            assert!(matches!(
                resolve(Some(&s), None, &db()),
                Err(UserError::IdOutOfRange { .. })
            ));
        }
    }

    #[test]
    fn image_user_forms() {
        let cases: [(&str, (u32, u32)); 7] = [
            ("app", (1000, 1000)),
            ("1000", (1000, 1000)),
            ("4242", (4242, 0)),
            ("app:wheel", (1000, 10)),
            ("1000:7", (1000, 7)),
            ("nobody:0", (65534, 0)),
            ("4242:extra", (4242, 50000)),
        ];
        for (value, (uid, gid)) in cases {
            let r = resolve(None, Some(value), &db()).expect(value);
            assert_eq!((r.user.uid, r.user.gid), (uid, gid), "{value}");
        }
        for bad in ["ghost", "app:ghosts", ":1", "1:", "1:2:3"] {
            assert!(resolve(None, Some(bad), &db()).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_as_user_wins_over_image_user() {
        let mut s = sc();
        s.run_as_user = Some(v1::Int64Value { value: 0 });
        let r = resolve(Some(&s), Some("app"), &db()).expect("resolve");
        assert_eq!(r.user.uid, 0);
    }
}
