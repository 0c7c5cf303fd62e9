//! Pulls from the local registry (conformance/registry.sh, test images from
//! krio-testimages) through the mirror setup critest uses. Needs root and
//! /usr/bin/docker-registry: otherwise SKIPPED, or failed when
//! KRIO_REQUIRE_ROOT_TESTS=1.

mod common;

use common::{BUSYBOX, REGISTRY, TestStore, entries, mirrors_conf, registry_available};
use krio_image::ErrorKind;

macro_rules! require_registry {
    ($name:expr) => {
        if !registry_available($name) {
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_index_through_mirror_and_resolve() {
    require_registry!("pull_index_through_mirror_and_resolve");
    let t = TestStore::new(&mirrors_conf());
    let rec = t.store.pull(BUSYBOX, None).await.expect("pull busybox");
    assert!(rec.id.starts_with("sha256:"));
    assert_eq!(rec.repo_tags, [BUSYBOX]);
    assert_eq!(rec.repo_digests.len(), 1);
    assert!(rec.repo_digests[0].starts_with("registry.k8s.io/e2e-test-images/busybox@sha256:"));
    assert!(rec.size > 0);
    assert!(!rec.layers.is_empty());
    // The amd64 config was picked out of the index.
    let cfg = t.store.image_config(&rec.id).expect("config");
    assert_eq!(cfg.architecture().to_string(), "amd64");
    for l in &rec.layers {
        let hex = l.strip_prefix("sha256:").expect("chain id");
        assert!(
            t.images_dir().join("layers").join(hex).join("bin").is_dir(),
            "layer {l} unpacked"
        );
    }
    let hex = rec.id.strip_prefix("sha256:").expect("id");
    for name in [
        rec.id.as_str(),
        hex,
        &hex[..12],
        BUSYBOX,
        rec.repo_digests[0].as_str(),
        &format!(
            "{BUSYBOX}@{}",
            rec.repo_digests[0].split('@').nth(1).expect("digest")
        ),
    ] {
        let found = t
            .store
            .resolve(name)
            .expect("resolve")
            .unwrap_or_else(|| panic!("{name} not found"));
        assert_eq!(found.id, rec.id, "{name}");
    }
    assert!(t.store.resolve("busybox").expect("resolve").is_none());
    assert!(t.store.resolve("sha256:00").expect("resolve").is_none());
    assert_eq!(t.store.list().expect("list"), std::slice::from_ref(&rec));
    let usage = t.store.fs_usage().expect("usage");
    assert!(usage.used_bytes > rec.size / 2 && usage.inodes_used > 10);
    // Bad references are typed.
    let err = t
        .store
        .pull("Registry.k8s.io/UPPER:1", None)
        .await
        .expect_err("invalid");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // A tag that does not exist fails and leaves nothing.
    let err = t
        .store
        .pull("registry.k8s.io/e2e-test-images/busybox:no-such-tag", None)
        .await
        .expect_err("missing tag");
    assert_eq!(t.store.list().expect("list").len(), 1, "{err}");
    assert!(entries(&t.images_dir().join("tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_digest_docker_schema2_and_direct_insecure() {
    require_registry!("pull_by_digest_docker_schema2_and_direct_insecure");
    let t = TestStore::new(&format!(
        "{}\n[[registry]]\nlocation = \"{REGISTRY}\"\ninsecure = true\n",
        mirrors_conf()
    ));
    let by_tag = t
        .store
        .pull("registry.k8s.io/pause:3.9", None)
        .await
        .expect("pull pause");
    let digest = by_tag.repo_digests[0]
        .split('@')
        .nth(1)
        .expect("digest")
        .to_owned();
    let by_digest = t
        .store
        .pull(&format!("registry.k8s.io/pause@{digest}"), None)
        .await
        .expect("pull by digest");
    assert_eq!(by_digest.id, by_tag.id);
    assert_eq!(by_digest.repo_tags, ["registry.k8s.io/pause:3.9"]);
    assert_eq!(by_digest.user.as_deref(), Some("65535:65535"));
    // Same image under another registry name: one record, two tags.
    let direct = t
        .store
        .pull(&format!("{REGISTRY}/k8s.gcr.io/pause:3.9"), None)
        .await
        .expect("pull from the insecure registry directly");
    assert_eq!(direct.id, by_tag.id);
    assert_eq!(direct.repo_tags.len(), 2);
    // Docker schema 2 manifest.
    let nginx = t
        .store
        .pull("gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64", None)
        .await
        .expect("pull docker schema 2");
    assert_eq!(
        nginx.repo_tags,
        ["gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest"]
    );
    t.store
        .image_config(&nginx.id)
        .expect("docker config parses as OCI");
    // A wrong digest is not found, and nothing is recorded.
    let wrong = format!("registry.k8s.io/pause@sha256:{}", "0".repeat(64));
    t.store
        .pull(&wrong, None)
        .await
        .expect_err("unknown digest");
    assert_eq!(t.store.list().expect("list").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tags_one_record_and_remove_by_tag() {
    require_registry!("three_tags_one_record_and_remove_by_tag");
    let t = TestStore::new(&mirrors_conf());
    let base = "gcr.io/k8s-staging-cri-tools/test-image-tags";
    let mut id = None;
    for tag in ["1", "2", "3"] {
        let rec = t
            .store
            .pull(&format!("{base}:{tag}"), None)
            .await
            .expect("pull tag");
        assert_eq!(id.get_or_insert(rec.id.clone()), &rec.id);
    }
    let all = t.store.list().expect("list");
    assert_eq!(all.len(), 1);
    let mut tags = all[0].repo_tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        [
            format!("{base}:1"),
            format!("{base}:2"),
            format!("{base}:3")
        ]
    );
    assert!(!entries(&t.images_dir().join("layers")).is_empty());
    assert!(t.store.remove(&format!("{base}:2")).expect("remove"));
    assert!(t.store.list().expect("list").is_empty());
    for tag in ["1", "2", "3"] {
        assert!(
            t.store
                .resolve(&format!("{base}:{tag}"))
                .expect("resolve")
                .is_none()
        );
    }
    assert!(
        entries(&t.images_dir().join("layers")).is_empty(),
        "layers freed"
    );
    assert!(
        entries(&t.images_dir().join("blobs/sha256")).is_empty(),
        "blobs freed"
    );
    assert!(!t.store.remove(&format!("{base}:2")).expect("remove again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_pulls_download_once() {
    require_registry!("concurrent_identical_pulls_download_once");
    let t = TestStore::new(&mirrors_conf());
    let image = "registry.k8s.io/e2e-test-images/nginx:1.14-2";
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let s = t.store.clone();
            tokio::spawn(async move { s.pull(image, None).await })
        })
        .collect();
    let mut ids = Vec::new();
    for p in pulls {
        ids.push(p.await.expect("join").expect("pull").id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    let rec = t.store.resolve(image).expect("resolve").expect("found");
    assert_eq!(
        t.store.blob_fetches(),
        1 + rec.layers.len() as u64,
        "config + each layer once"
    );
    // A later pull of the same tag fetches nothing new.
    t.store.pull(image, None).await.expect("pull again");
    assert_eq!(t.store.blob_fetches(), 1 + rec.layers.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_mirror_falls_back_and_blocked_is_refused() {
    require_registry!("dead_mirror_falls_back_and_blocked_is_refused");
    let conf = format!(
        "[[registry]]\nprefix = \"registry.k8s.io\"\nlocation = \"registry.k8s.io\"\n\
         [[registry.mirror]]\nlocation = \"127.0.0.1:1/registry.k8s.io\"\ninsecure = true\n\
         [[registry.mirror]]\nlocation = \"{REGISTRY}/registry.k8s.io\"\ninsecure = true\n\
         [[registry]]\nlocation = \"gcr.io\"\nblocked = true\n"
    );
    let t = TestStore::new(&conf);
    t.store
        .pull("registry.k8s.io/pause:3.9", None)
        .await
        .expect("second mirror serves");
    let err = t
        .store
        .pull("gcr.io/k8s-staging-cri-tools/test-image-1", None)
        .await
        .expect_err("blocked");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    // The config is re-read when it changes: unblock gcr.io.
    let path = t.dir.path().join("registries.conf");
    std::fs::write(&path, mirrors_conf()).expect("rewrite");
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(10))
        .expect("mtime");
    t.store
        .pull("gcr.io/k8s-staging-cri-tools/test-image-1", None)
        .await
        .expect("unblocked without restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_persist_and_open_repairs() {
    require_registry!("records_persist_and_open_repairs");
    let mut t = TestStore::new(&mirrors_conf());
    let pause = t
        .store
        .pull("registry.k8s.io/pause:3.9", None)
        .await
        .expect("pull pause");
    let bb = t.store.pull(BUSYBOX, None).await.expect("pull busybox");
    t.reopen();
    let mut ids: Vec<String> = t
        .store
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    let mut want = vec![pause.id.clone(), bb.id.clone()];
    want.sort();
    assert_eq!(ids, want, "records persist across reopen");
    assert_eq!(
        t.store.resolve(BUSYBOX).expect("resolve").map(|r| r.id),
        Some(bb.id.clone())
    );
    // An unclean stop: a partial blob and a half-unpacked layer in tmp/,
    // an orphan layer, and a recorded image whose layer vanished.
    let images = t.images_dir();
    std::fs::write(images.join("tmp/blob-partial-1"), b"trunc").expect("partial blob");
    std::fs::create_dir_all(images.join("tmp/unpack-x/root/bin")).expect("partial layer");
    let orphan = images.join("layers").join("f".repeat(64));
    std::fs::create_dir_all(&orphan).expect("orphan");
    let hex = bb
        .layers
        .last()
        .expect("layer")
        .strip_prefix("sha256:")
        .expect("hex");
    std::fs::remove_dir_all(images.join("layers").join(hex)).expect("remove a layer");
    t.reopen();
    assert!(entries(&images.join("tmp")).is_empty(), "tmp cleaned");
    assert!(!orphan.exists(), "orphan layer collected");
    let left: Vec<String> = t
        .store
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&pause.id),
        "broken image dropped, whole one kept"
    );
    // Pulling again restores it.
    t.store.pull(BUSYBOX, None).await.expect("pull again");
    assert_eq!(t.store.list().expect("list").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_mounts_and_pins_the_image() {
    require_registry!("rootfs_mounts_and_pins_the_image");
    let t = TestStore::new(&mirrors_conf());
    let rec = t
        .store
        .pull("registry.k8s.io/e2e-test-images/nonewprivs:1.3", None)
        .await
        .expect("pull");
    let spec = t.store.prepare_rootfs(&rec.id, "ctr1").expect("prepare");
    assert_eq!(spec.lower_dirs.len(), rec.layers.len());
    assert!(spec.fits_one_page());
    let target = t.dir.path().join("merged");
    std::fs::create_dir(&target).expect("mkdir");
    t.store.mount_rootfs(&spec, &target).expect("mount");
    let nnp = std::fs::metadata(target.join("usr/local/bin/nnp"));
    let busybox = target.join("bin/busybox").exists();
    std::fs::write(target.join("tmp/written"), b"x").expect("write in container");
    rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty()).expect("unmount");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        nnp.expect("nnp").permissions().mode() & 0o7777,
        0o4755,
        "setuid kept"
    );
    assert!(busybox);
    assert!(
        spec.upper_dir.join("tmp/written").exists(),
        "writes go to the upper dir"
    );
    let err = t.store.remove(&rec.id).expect_err("in use");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    t.store.remove_rootfs("ctr1").expect("remove rootfs");
    t.store
        .remove_rootfs("ctr1")
        .expect("remove rootfs is idempotent");
    assert!(t.store.remove(&rec.id).expect("remove"));
    assert!(t.store.prepare_rootfs(&rec.id, "ctr2").is_err());
    assert_eq!(
        t.store
            .prepare_rootfs("x", "../evil")
            .expect_err("bad id")
            .kind(),
        ErrorKind::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_images_pull_with_their_users() {
    require_registry!("critest_images_pull_with_their_users");
    let t = TestStore::new(&mirrors_conf());
    let cri = "gcr.io/k8s-staging-cri-tools";
    let cases = [
        (format!("{cri}/test-image-user-uid"), Some("1002")),
        (format!("{cri}/test-image-user-username"), Some("www-data")),
        (
            format!("{cri}/test-image-user-uid-group"),
            Some("1003:1004"),
        ),
        (
            format!("{cri}/test-image-user-username-group"),
            Some("www-data:1004"),
        ),
        (format!("{cri}/test-image-predefined-group"), Some("1000")),
        (
            "registry.k8s.io/e2e-test-images/httpd:2.4.39-4".to_owned(),
            None,
        ),
        (
            "public.ecr.aws/docker/library/busybox:1.35.0-glibc".to_owned(),
            None,
        ),
        ("k8s.gcr.io/pause:3.9".to_owned(), Some("65535:65535")),
    ];
    for (image, user) in &cases {
        let fut = t.store.pull(image, None);
        assert_send(&fut);
        let rec = fut.await.unwrap_or_else(|e| panic!("pull {image}: {e:?}"));
        assert_eq!(rec.user.as_deref(), *user, "{image}");
    }
    assert_eq!(t.store.list().expect("list").len(), cases.len());
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn store_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<krio_image::ImageStore>();
    fn error_is_send_sync<T: Send + Sync + std::error::Error + 'static>() {}
    error_is_send_sync::<krio_image::ImageError>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_images_sharing_layers_fetch_each_layer_once() {
    require_registry!("concurrent_pulls_of_images_sharing_layers_fetch_each_layer_once");
    let t = TestStore::new(&mirrors_conf());
    let images: [&'static str; 3] = [
        "gcr.io/k8s-staging-cri-tools/test-image-1",
        "gcr.io/k8s-staging-cri-tools/test-image-2",
        "gcr.io/k8s-staging-cri-tools/test-image-3",
    ];
    let pulls: Vec<_> = images
        .into_iter()
        .map(|i| {
            let s = t.store.clone();
            tokio::spawn(async move { s.pull(i, None).await })
        })
        .collect();
    let mut layers = std::collections::HashSet::new();
    for p in pulls {
        let rec = p.await.expect("join").expect("pull");
        layers.extend(rec.layers);
    }
    let base = std::collections::HashSet::<String>::from_iter(
        t.store
            .list()
            .expect("list")
            .iter()
            .map(|r| r.layers[0].clone()),
    );
    assert_eq!(base.len(), 1, "the test images share their base layer");
    assert_eq!(
        t.store.blob_fetches(),
        images.len() as u64 + layers.len() as u64,
        "each config and each distinct layer fetched once"
    );
}
