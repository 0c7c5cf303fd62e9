//! Masked and read-only paths, and AppArmor.
//!
//! Masked and read-only paths are containerd's defaults unless the config
//! gives its own list (the kubelet always does for its default proc mount);
//! since an empty repeated field cannot be told from an absent one on the
//! wire, an empty list means the defaults, as in containerd. Privileged
//! containers get none.
//!
//! AppArmor: on a host without AppArmor, `RuntimeDefault` and `Unconfined`
//! (and the deprecated `runtime/default`, `unconfined`, empty) mean no
//! profile, and a `Localhost` profile is an error, since it cannot be
//! enforced. With AppArmor, `Localhost` names the profile to apply; krio
//! ships no default profile of its own yet, so `RuntimeDefault` applies none.

use krio_proto::v1;

use super::mounts::clean_container_path;

/// containerd's default masked paths.
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The security part of the config cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A masked or read-only path that is not a clean absolute path.
    #[error("security_context.{field}: {path:?} {reason}")]
    BadPath {
        /// `masked_paths` or `readonly_paths`.
        field: &'static str,
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// An AppArmor profile on a host without AppArmor.
    #[error(
        "{field}: AppArmor profile {profile:?} was requested, but AppArmor is not available on this host"
    )]
    AppArmorUnavailable {
        /// The CRI field.
        field: &'static str,
        /// The profile.
        profile: String,
    },
    /// An AppArmor value that is not a known form.
    #[error("{field}: {value:?} is not runtime/default, unconfined or localhost/<profile>")]
    BadAppArmor {
        /// The CRI field.
        field: &'static str,
        /// The value.
        value: String,
    },
}

fn paths(
    field: &'static str,
    given: &[String],
    defaults: &[&str],
) -> Result<Vec<String>, SecurityError> {
    if given.is_empty() {
        return Ok(defaults.iter().map(|p| (*p).to_owned()).collect());
    }
    given
        .iter()
        .map(|p| {
            clean_container_path(p)
                .map(|clean| clean.display().to_string())
                .map_err(|reason| SecurityError::BadPath {
                    field,
                    path: p.clone(),
                    reason,
                })
        })
        .collect()
}

/// Masked and read-only paths.
pub(crate) fn masked_and_readonly(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    privileged: bool,
) -> Result<(Vec<String>, Vec<String>), SecurityError> {
    if privileged {
        return Ok((Vec::new(), Vec::new()));
    }
    let masked = sc.map(|s| s.masked_paths.as_slice()).unwrap_or_default();
    let readonly = sc.map(|s| s.readonly_paths.as_slice()).unwrap_or_default();
    Ok((
        paths("masked_paths", masked, &DEFAULT_MASKED_PATHS)?,
        paths("readonly_paths", readonly, &DEFAULT_READONLY_PATHS)?,
    ))
}

/// The AppArmor profile to apply, if any.
pub(crate) fn apparmor(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    privileged: bool,
    host_has_apparmor: bool,
) -> Result<Option<String>, SecurityError> {
    use v1::security_profile::ProfileType;
    if privileged {
        return Ok(None);
    }
    let (field, localhost) = match sc.and_then(|s| s.apparmor.as_ref()) {
        Some(profile) => match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::Localhost) => {
                let name = profile.localhost_ref.as_str();
                let name = name.strip_prefix("localhost/").unwrap_or(name);
                ("security_context.apparmor", Some(name.to_owned()))
            }
            _ => ("security_context.apparmor", None),
        },
        None => {
            // Deprecated in the CRI, still sent by older kubelets.
            #[allow(deprecated)]
            let value = sc.map(|s| s.apparmor_profile.as_str()).unwrap_or_default();
            let field = "security_context.apparmor_profile";
            match value {
                "" | "runtime/default" | "unconfined" => (field, None),
                _ => match value.strip_prefix("localhost/") {
                    Some(name) => (field, Some(name.to_owned())),
                    None => {
                        return Err(SecurityError::BadAppArmor {
                            field,
                            value: value.to_owned(),
                        });
                    }
                },
            }
        }
    };
    match localhost {
        Some(profile) if !host_has_apparmor => {
            Err(SecurityError::AppArmorUnavailable { field, profile })
        }
        Some(profile) if profile.is_empty() => Err(SecurityError::BadAppArmor {
            field,
            value: profile,
        }),
        other => Ok(other),
    }
}

#[cfg(test)]
#[allow(deprecated)] // the deprecated CRI fields are still sent and tested
mod tests {
    use super::*;
    use v1::security_profile::ProfileType;

    fn sc() -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext::default()
    }

    #[test]
    fn defaults_replaced_by_the_config_and_cleared_when_privileged() {
        let (masked, readonly) = masked_and_readonly(None, false).expect("paths");
        assert_eq!(masked.len(), DEFAULT_MASKED_PATHS.len());
        assert!(masked.contains(&"/proc/kcore".to_owned()));
        assert_eq!(readonly.len(), DEFAULT_READONLY_PATHS.len());

        let mut s = sc();
        s.masked_paths = vec!["/bin/ls".into()];
        s.readonly_paths = vec!["/tmp//".into()];
        let (masked, readonly) = masked_and_readonly(Some(&s), false).expect("paths");
        assert_eq!(masked, vec!["/bin/ls"]);
        assert_eq!(readonly, vec!["/tmp"]);

        let (masked, readonly) = masked_and_readonly(Some(&s), true).expect("paths");
        assert!(masked.is_empty() && readonly.is_empty());

        s.masked_paths = vec!["/proc/../etc".into()];
        assert!(matches!(
            masked_and_readonly(Some(&s), false),
            Err(SecurityError::BadPath { .. })
        ));
    }

    #[test]
    fn apparmor_without_apparmor() {
        let mut s = sc();
        assert_eq!(apparmor(Some(&s), false, false).expect("none"), None);
        s.apparmor = Some(v1::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            ..Default::default()
        });
        assert_eq!(apparmor(Some(&s), false, false).expect("none"), None);
        s.apparmor = Some(v1::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "my-profile".into(),
        });
        assert!(matches!(
            apparmor(Some(&s), false, false),
            Err(SecurityError::AppArmorUnavailable { .. })
        ));
        assert_eq!(
            apparmor(Some(&s), false, true).expect("profile").as_deref(),
            Some("my-profile")
        );
        assert_eq!(apparmor(Some(&s), true, false).expect("privileged"), None);

        let mut s = sc();
        for ok in ["", "runtime/default", "unconfined"] {
            s.apparmor_profile = ok.into();
            assert_eq!(apparmor(Some(&s), false, false).expect(ok), None);
        }
        s.apparmor_profile = "localhost/p".into();
        assert!(apparmor(Some(&s), false, false).is_err());
        assert_eq!(
            apparmor(Some(&s), false, true).expect("p").as_deref(),
            Some("p")
        );
        s.apparmor_profile = "weird".into();
        assert!(matches!(
            apparmor(Some(&s), false, true),
            Err(SecurityError::BadAppArmor { .. })
        ));
    }
}
