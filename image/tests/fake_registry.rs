//! Pulls from a tiny in-test registry that misbehaves: content that does
//! not match its digest, and a blob that stalls. Needs no root.

mod common;

use common::fake::{Auth, Routes, serve, serve_recording, serve_with_auth};
use common::{TestStore, entries};
use krio_image::digest::Digest;
use std::sync::Arc;
use std::time::Duration;

/// Routes for `test/img:v1` with one layer: its diff ID, the blob digest
/// and size the manifest claims, and the bytes actually served (stalling
/// after `stall` bytes when given).
fn routes(
    diff_id: &Digest,
    blob: (&Digest, usize, &str),
    served: Vec<u8>,
    stall: Option<usize>,
) -> Routes {
    let (blob_digest, blob_size, media_type) = blob;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"config":{{}}}}"#
    );
    let config_digest = Digest::of_bytes(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{media_type}","digest":"{blob_digest}","size":{blob_size}}}]}}"#,
        config.len(),
    );
    let mut r = Routes::new();
    r.insert(
        "/v2/test/img/manifests/v1".into(),
        (
            "application/vnd.oci.image.manifest.v1+json".into(),
            manifest.into_bytes(),
            None,
        ),
    );
    r.insert(
        format!("/v2/test/img/blobs/{config_digest}"),
        ("application/octet-stream".into(), config.into_bytes(), None),
    );
    r.insert(
        format!("/v2/test/img/blobs/{blob_digest}"),
        ("application/octet-stream".into(), served, stall),
    );
    r
}

/// An uncompressed one-layer image whose layer is `layer_bytes` by its
/// digest but is served as `served_layer`.
fn image(layer_bytes: &[u8], served_layer: Vec<u8>, stall: Option<usize>) -> (Routes, Digest) {
    let layer_digest = Digest::of_bytes(layer_bytes);
    let blob = (
        &layer_digest,
        layer_bytes.len(),
        "application/vnd.oci.image.layer.v1.tar",
    );
    let r = routes(&layer_digest, blob, served_layer, stall);
    (r, layer_digest)
}

fn conf(addr: &str) -> String {
    format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n")
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_fails_naming_the_blob() {
    let tar = vec![0u8; 1024];
    let mut tampered = tar.clone();
    tampered[0] = 1;
    let (routes, layer) = image(&tar, tampered, None);
    let addr = serve(routes).await;
    let t = TestStore::new(&conf(&addr));
    let err = t
        .store
        .pull(&format!("{addr}/test/img:v1"), None)
        .await
        .expect_err("tampered blob accepted");
    let msg = chain(&err);
    assert!(
        msg.contains(layer.as_str()),
        "error does not name the blob: {msg}"
    );
    assert!(t.store.list().expect("list").is_empty());
    assert!(
        entries(&t.images_dir().join("tmp")).is_empty(),
        "temp files left"
    );
    assert!(entries(&t.images_dir().join("layers")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_blob_hits_the_progress_timeout() {
    let tar = vec![0u8; 64 * 1024];
    let (routes, _) = image(&tar, tar.clone(), Some(1000));
    let addr = serve(routes).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("registries.conf"), conf(&addr)).expect("write");
    let db = Arc::new(redb::Database::create(dir.path().join("krio.redb")).expect("db"));
    let mut opts = krio_image::ImageStoreOptions::new(dir.path().join("images"));
    opts.registries_conf = dir.path().join("registries.conf");
    opts.auth_file = dir.path().join("auth.json");
    opts.progress_timeout = Duration::from_secs(2);
    let store = krio_image::ImageStore::open(db, opts).expect("open");
    let started = std::time::Instant::now();
    let err = store
        .pull(&format!("{addr}/test/img:v1"), None)
        .await
        .expect_err("stall accepted");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(store.list().expect("list").is_empty(), "{err}");
    assert!(
        entries(&dir.path().join("images/tmp")).is_empty(),
        "temp files left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_image_from_fake_registry() {
    // Sanity check of the fake: an honest blob pulls.
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"hi"[..]).expect("append");
        b.finish().expect("finish");
    }
    let (routes, _) = image(&tar, tar.clone(), None);
    let addr = serve(routes).await;
    let t = TestStore::new(&conf(&addr));
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED good_image_from_fake_registry: unpacking needs root (chown)");
        return;
    }
    let rec = t
        .store
        .pull(&format!("{addr}/test/img:v1"), None)
        .await
        .expect("pull");
    assert_eq!(rec.repo_tags, [format!("{addr}/test/img:v1")]);
    assert_eq!(t.store.blob_fetches(), 2);
}

fn small_tar() -> Vec<u8> {
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"hi"[..]).expect("append");
        b.finish().expect("finish");
    }
    tar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_request_or_auth_file() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED basic_auth_from_request_or_auth_file: unpacking needs root (chown)");
        return;
    }
    let tar = small_tar();
    let (routes, _) = image(&tar, tar.clone(), None);
    // base64("user:pass")
    let addr = serve_with_auth(routes, Auth::Basic("dXNlcjpwYXNz")).await;
    let reference = format!("{addr}/test/img:v1");
    let t = TestStore::new(&conf(&addr));
    let err = t
        .store
        .pull(&reference, None)
        .await
        .expect_err("anonymous pull accepted");
    assert!(t.store.list().expect("list").is_empty(), "{err}");
    let wrong = krio_image::RegistryAuth {
        username: "user".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    t.store
        .pull(&reference, Some(&wrong))
        .await
        .expect_err("wrong password accepted");
    let auth = krio_image::RegistryAuth {
        username: "user".into(),
        password: "pass".into(),
        ..Default::default()
    };
    t.store
        .pull(&reference, Some(&auth))
        .await
        .expect("pull with request credentials");
    // From the auth file, `auth` field form.
    let t2 = TestStore::new(&conf(&addr));
    std::fs::write(
        t2.dir.path().join("auth.json"),
        format!(r#"{{"auths":{{"{addr}":{{"auth":"dXNlcjpwYXNz"}}}}}}"#),
    )
    .expect("write auth.json");
    t2.store
        .pull(&reference, None)
        .await
        .expect("pull with auth file credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED bearer_token_flow: unpacking needs root (chown)");
        return;
    }
    let tar = small_tar();
    let (routes, _) = image(&tar, tar.clone(), None);
    let addr = serve_with_auth(
        routes,
        Auth::Bearer {
            basic: "dXNlcjpwYXNz",
            token: "tok123",
        },
    )
    .await;
    let reference = format!("{addr}/test/img:v1");
    let t = TestStore::new(&conf(&addr));
    t.store
        .pull(&reference, None)
        .await
        .expect_err("anonymous token refused");
    let auth = krio_image::RegistryAuth {
        auth: "dXNlcjpwYXNz".into(),
        ..Default::default()
    };
    t.store
        .pull(&reference, Some(&auth))
        .await
        .expect("token obtained with basic credentials");
    // A registry token from the request is used as is.
    let t2 = TestStore::new(&conf(&addr));
    let token = krio_image::RegistryAuth {
        registry_token: "tok123".into(),
        ..Default::default()
    };
    t2.store
        .pull(&reference, Some(&token))
        .await
        .expect("pull with a registry token");
}

/// Routes for `test/img:v1` whose one layer is served as `blob` and
/// unpacks to `tar` (the config's diff ID).
fn image_with_blob(tar: &[u8], blob: Vec<u8>) -> (Routes, Digest) {
    let blob_digest = Digest::of_bytes(&blob);
    let claimed = (
        &blob_digest,
        blob.len(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let r = routes(&Digest::of_bytes(tar), claimed, blob, None);
    (r, blob_digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_refused_by_the_unpacked_size_cap() {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED gzip_bomb_is_refused_by_the_unpacked_size_cap: unpacking needs root (chown)"
        );
        return;
    }
    // 16 MiB of zeros in one file: about 16 KiB of gzip.
    let tar = common::fake::tar_with_file("zeros", 16 << 20);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < 1 << 20, "the blob is small: {}", gz.len());
    let (routes, blob) = image_with_blob(&tar, gz);
    let addr = serve(routes).await;
    let reference = format!("{addr}/test/img:v1");

    let t = TestStore::with_options(&conf(&addr), |o| o.max_unpacked_bytes = 1 << 20);
    let err = t
        .store
        .pull(&reference, None)
        .await
        .expect_err("a layer over the cap was accepted");
    let msg = chain(&err);
    assert_eq!(
        err.kind(),
        krio_image::ErrorKind::FailedPrecondition,
        "{msg}"
    );
    assert!(
        msg.contains(blob.as_str()) && msg.contains("max_unpacked_bytes"),
        "the error names the layer and the setting: {msg}"
    );
    assert!(t.store.list().expect("list").is_empty());
    assert!(
        entries(&t.images_dir().join("tmp")).is_empty(),
        "the partial unpack is removed"
    );
    assert!(entries(&t.images_dir().join("layers")).is_empty());

    // The same image within a larger cap: the cap is what refused it.
    let t2 = TestStore::with_options(&conf(&addr), |o| o.max_unpacked_bytes = 64 << 20);
    t2.store
        .pull(&reference, None)
        .await
        .expect("pull within the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_credentials_stay_with_their_registry() {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED request_credentials_stay_with_their_registry: unpacking needs root (chown)"
        );
        return;
    }
    let tar = small_tar();
    let (routes, _) = image(&tar, tar.clone(), None);
    // The origin wants user:pass; the mirror (another host:port) asks
    // anyone for credentials on /v2/ but serves everything, and records
    // what it is sent.
    let origin = serve_with_auth(routes.clone(), Auth::Basic("dXNlcjpwYXNz")).await;
    let (mirror, log) = serve_recording(routes, Auth::ChallengeOnly).await;
    let conf = format!(
        "[[registry]]\nlocation = \"{origin}\"\ninsecure = true\n\
         [[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n"
    );
    let reference = format!("{origin}/test/img:v1");
    let auth = krio_image::RegistryAuth {
        username: "user".into(),
        password: "pass".into(),
        ..Default::default()
    };
    let t = TestStore::new(&conf);
    t.store
        .pull(&reference, Some(&auth))
        .await
        .expect("pull through the mirror");
    let seen = log.lock().expect("log").clone();
    assert!(
        seen.iter().any(|(p, _)| p.contains("/manifests/")),
        "the mirror served the pull: {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, a)| a.is_empty()),
        "the mirror was sent the origin's credentials: {seen:?}"
    );

    // With auth-file credentials for the mirror, the mirror gets those
    // (and still never the request's).
    log.lock().expect("log").clear();
    let t2 = TestStore::new(&conf);
    // base64("mirror-user:mirror-pw")
    let mirror_b64 = "bWlycm9yLXVzZXI6bWlycm9yLXB3";
    std::fs::write(
        t2.dir.path().join("auth.json"),
        format!(r#"{{"auths":{{"{mirror}":{{"auth":"{mirror_b64}"}}}}}}"#),
    )
    .expect("write auth.json");
    t2.store
        .pull(&reference, Some(&auth))
        .await
        .expect("pull through the mirror with its own credentials");
    let seen = log.lock().expect("log").clone();
    let manifest_auth: Vec<&String> = seen
        .iter()
        .filter(|(p, _)| p.contains("/manifests/"))
        .map(|(_, a)| a)
        .collect();
    assert!(
        !manifest_auth.is_empty()
            && manifest_auth
                .iter()
                .all(|a| *a == &format!("Basic {mirror_b64}")),
        "the mirror got its own credentials: {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, a)| !a.contains("dXNlcjpwYXNz")),
        "the request's credentials leaked to the mirror: {seen:?}"
    );
}
