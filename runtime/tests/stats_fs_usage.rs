//! `krio_runtime::stats::fs_usage`: bytes and inodes under a directory,
//! hard links once, bounded. No root needed.

use krio_runtime::stats::fs_usage;

#[test]
fn fs_usage_stats_count_files_dirs_and_links_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
    std::fs::write(root.join("a/b/big"), vec![1u8; 256 * 1024]).expect("write");
    std::fs::write(root.join("small"), b"x").expect("write");
    std::fs::hard_link(root.join("a/b/big"), root.join("a/big-link")).expect("link");
    std::os::unix::fs::symlink("/etc/passwd", root.join("a/sym")).expect("symlink");
    let u = fs_usage(root, 1000).expect("fs_usage");
    // root, a, a/b, big (with its link), small, sym.
    assert_eq!(u.inodes_used, 6);
    assert!(!u.truncated);
    assert!(u.used_bytes >= 256 * 1024, "{u:?}");
    assert!(
        u.used_bytes < 2 * 256 * 1024,
        "hard link counted twice: {u:?}"
    );
}

#[test]
fn fs_usage_stats_stop_at_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..50 {
        std::fs::write(dir.path().join(format!("f{i}")), b"data").expect("write");
    }
    let u = fs_usage(dir.path(), 10).expect("fs_usage");
    assert!(u.truncated);
    assert_eq!(u.inodes_used, 10);
    let all = fs_usage(dir.path(), 51).expect("fs_usage");
    assert!(!all.truncated);
    assert_eq!(all.inodes_used, 51);
    let none = fs_usage(dir.path(), 0).expect("fs_usage");
    assert!(none.truncated);
    assert_eq!(none.inodes_used, 0);
}

#[test]
fn fs_usage_stats_of_missing_dir_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(fs_usage(&dir.path().join("missing"), 10).is_err());
}
