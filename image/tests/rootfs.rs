//! Overlay mounts of long layer chains (more than one page of options).
//! Needs root: SKIPPED otherwise, failed when KRIO_REQUIRE_ROOT_TESTS=1.

use krio_image::RootfsSpec;
use krio_image::rootfs::mount_overlay;

#[test]
fn long_chain_beyond_one_page_mounts() {
    if !rustix::process::geteuid().is_root() {
        if std::env::var("KRIO_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!("long_chain_beyond_one_page_mounts needs root (KRIO_REQUIRE_ROOT_TESTS=1)");
        }
        eprintln!("SKIPPED long_chain_beyond_one_page_mounts: needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Long directory names so 150 layers need far more than 4096 bytes.
    let base = dir
        .path()
        .join("a-rather-long-directory-name-to-make-options-long");
    let mut lowers = Vec::new();
    for i in 0..150 {
        let d = base.join(format!("layer-{i:03}-{}", "x".repeat(40)));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join(format!("f{i}")), format!("{i}")).expect("write");
        std::fs::write(d.join("top"), format!("{i}")).expect("write");
        lowers.push(d);
    }
    lowers.reverse(); // top first
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    let target = dir.path().join("merged");
    for d in [&upper, &work, &target] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let spec = RootfsSpec {
        container_id: "long".into(),
        image_id: "sha256:x".into(),
        lower_dirs: lowers.clone(),
        lower_links: lowers,
        upper_dir: upper,
        work_dir: work,
    };
    assert!(!spec.fits_one_page());
    mount_overlay(&spec, &target).expect("mount a 150-layer chain");
    let top = std::fs::read_to_string(target.join("top"));
    let first = target.join("f0").exists();
    rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty()).expect("unmount");
    assert_eq!(top.expect("read top"), "149", "top layer wins");
    assert!(first, "base layer visible");
}
