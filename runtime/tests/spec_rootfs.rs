//! The image's /etc/passwd and /etc/group are hostile input.

mod spec_support;

use std::fs;
use std::os::unix::fs::symlink;

use krio_proto::v1;
use krio_runtime::spec::{ErrorCode, SpecError, UserError, rootfs::RootfsError};
use spec_support::{Fixture, env};

const OUTSIDE: &str = "evil:x:666:666:evil:/evil:/bin/sh\n";

fn with_username(f: &mut Fixture, name: &str) {
    f.security().run_as_username = name.into();
}

/// Named `spec` so that `cargo test -p krio-runtime spec` selects these tests.
mod spec {
    use super::*;

    #[test]
    fn absolute_symlink_out_of_the_rootfs_is_not_followed() {
        let mut f = Fixture::new();
        let outside = f.path("outside-shadow");
        fs::write(&outside, OUTSIDE).expect("write outside");
        fs::remove_file(f.rootfs.join("etc/passwd")).expect("rm");
        symlink(&outside, f.rootfs.join("etc/passwd")).expect("symlink");
        with_username(&mut f, "evil");
        let err = f.try_generate().expect_err("outside file must not be read");
        assert!(
            matches!(err, SpecError::User(UserError::UnknownUser { .. })),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn relative_symlink_cannot_climb_out() {
        let mut f = Fixture::new();
        fs::write(f.path("shadow"), OUTSIDE).expect("write outside");
        fs::remove_file(f.rootfs.join("etc/passwd")).expect("rm");
        symlink(
            "../../../../../../../../shadow",
            f.rootfs.join("etc/passwd"),
        )
        .expect("symlink");
        // Also a symlinked /etc directory pointing up.
        fs::remove_file(f.rootfs.join("etc/group")).expect("rm");
        symlink("../../etc-outside/group", f.rootfs.join("etc/group")).expect("symlink");
        with_username(&mut f, "evil");
        assert!(matches!(
            f.try_generate(),
            Err(SpecError::User(UserError::UnknownUser { .. }))
        ));
    }

    #[test]
    fn symlink_inside_the_rootfs_resolves_inside() {
        let mut f = Fixture::new();
        fs::write(
            f.rootfs.join("etc/passwd.real"),
            "inside:x:1234:1234::/in:/bin/sh\n",
        )
        .expect("write");
        fs::remove_file(f.rootfs.join("etc/passwd")).expect("rm");
        // An absolute link is taken relative to the rootfs.
        symlink("/etc/passwd.real", f.rootfs.join("etc/passwd")).expect("symlink");
        with_username(&mut f, "inside");
        let generated = f.generate();
        assert_eq!(generated.user.uid, 1234);
        assert!(env(&generated.spec).contains(&"HOME=/in".to_owned()));
    }

    #[test]
    fn a_huge_passwd_is_refused() {
        let mut f = Fixture::new();
        let file = fs::File::create(f.rootfs.join("etc/passwd")).expect("create");
        file.set_len(100 << 20).expect("sparse 100 MB");
        with_username(&mut f, "root");
        let err = f.try_generate().expect_err("too large");
        assert!(
            matches!(
                err,
                SpecError::User(UserError::Rootfs(RootfsError::TooLarge { .. }))
            ),
            "{err}"
        );
    }

    #[test]
    fn a_fifo_is_not_read() {
        let f = Fixture::new();
        fs::remove_file(f.rootfs.join("etc/group")).expect("rm");
        let status = std::process::Command::new("mkfifo")
            .arg(f.rootfs.join("etc/group"))
            .status()
            .expect("mkfifo");
        assert!(status.success());
        // Must return promptly instead of blocking on the FIFO.
        let err = f.try_generate().expect_err("fifo");
        assert!(
            matches!(
                err,
                SpecError::User(UserError::Rootfs(RootfsError::NotRegular { .. }))
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_user_database() {
        let mut f = Fixture::new();
        fs::remove_file(f.rootfs.join("etc/passwd")).expect("rm");
        fs::remove_file(f.rootfs.join("etc/group")).expect("rm");
        // A uid needs no entry…
        f.security().run_as_user = Some(v1::Int64Value { value: 4242 });
        let generated = f.generate();
        assert_eq!((generated.user.uid, generated.user.gid), (4242, 0));
        assert_eq!(generated.user.additional_gids, vec![0]);
        assert!(env(&generated.spec).contains(&"HOME=/".to_owned()));
        // …a name does.
        f.security().run_as_user = None;
        with_username(&mut f, "root");
        assert!(matches!(
            f.try_generate(),
            Err(SpecError::User(UserError::UnknownUser { .. }))
        ));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let mut f = Fixture::new();
        let mut text = String::from("::::\n\0\0\0\nroot:x:notanumber:0::/:/bin/sh\n");
        text.push_str(&"x".repeat(100_000));
        text.push_str("\nreal:x:77:88::/home/real:/bin/sh\n");
        fs::write(f.rootfs.join("etc/passwd"), text).expect("write");
        fs::write(
            f.rootfs.join("etc/group"),
            [
                0xff, 0xfe, b'\n', b'g', b':', b'x', b':', b'9', b':', b'r', b'e', b'a', b'l',
                b'\n',
            ],
        )
        .expect("write");
        with_username(&mut f, "real");
        let generated = f.generate();
        assert_eq!((generated.user.uid, generated.user.gid), (77, 88));
        assert_eq!(generated.user.additional_gids, vec![88, 9]);
    }
}
