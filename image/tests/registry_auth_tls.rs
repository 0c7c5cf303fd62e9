//! Pulls from extra instances of the real registry (docker-registry, see
//! common/extra.rs): htpasswd basic auth from the request and from the auth
//! file, and TLS trusted through certs.d or skipped with `insecure`. Needs
//! root, docker-registry, htpasswd and openssl: otherwise SKIPPED, or failed
//! when KRIO_REQUIRE_ROOT_TESTS=1.

mod common;

use common::extra::{ExtraRegistry, Setup};
use common::{TestStore, entries, registry_available};
use krio_image::{ErrorKind, RegistryAuth};

const USER: &str = "krio-user";
const PASSWORD: &str = "krio-pass-1";

/// Starts an extra registry, or skips (fails under KRIO_REQUIRE_ROOT_TESTS).
fn extra(test: &str, setup: &Setup) -> Option<ExtraRegistry> {
    if !registry_available(test) {
        return None;
    }
    match ExtraRegistry::start(setup) {
        Ok(r) => Some(r),
        Err(why) => {
            if std::env::var("KRIO_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
                panic!("{test}: an extra registry is required but {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    krio_image::pull::error_chain(e)
}

fn assert_nothing_left(t: &TestStore) {
    assert!(t.store.list().expect("list").is_empty(), "no image record");
    assert!(
        entries(&t.images_dir().join("tmp")).is_empty(),
        "no temp files"
    );
    assert!(
        entries(&t.images_dir().join("layers")).is_empty(),
        "no layers"
    );
}

fn basic(user: &str, password: &str) -> RegistryAuth {
    RegistryAuth {
        username: user.into(),
        password: password.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_wants_the_right_credentials() {
    let setup = Setup {
        htpasswd: Some((USER.into(), PASSWORD.into())),
        tls: false,
    };
    let Some(reg) = extra("htpasswd_registry_wants_the_right_credentials", &setup) else {
        return;
    };
    let conf = format!(
        "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
        reg.addr
    );
    let image = format!("{}/registry.k8s.io/pause:3.9", reg.addr);

    let t = TestStore::new(&conf);
    for (what, auth) in [
        ("no credentials", None),
        ("a wrong password", Some(basic(USER, "wrong"))),
        ("an unknown user", Some(basic("nobody", PASSWORD))),
    ] {
        let err = t.store.pull(&image, auth.as_ref()).await.expect_err(what);
        assert_eq!(
            err.kind(),
            ErrorKind::Unauthenticated,
            "{what}: {}",
            chain(&err)
        );
        assert!(
            chain(&err).contains(&reg.addr),
            "{what}: the message names the registry: {}",
            chain(&err)
        );
        assert_nothing_left(&t);
    }
    let rec = t
        .store
        .pull(&image, Some(&basic(USER, PASSWORD)))
        .await
        .expect("pull with the request's credentials");
    assert_eq!(rec.repo_tags, std::slice::from_ref(&image));
    assert_eq!(rec.user.as_deref(), Some("65535:65535"));

    // The same credentials from the auth file (`auth` form), none in the
    // request.
    let t2 = TestStore::new(&conf);
    let b64 = base64_of(&format!("{USER}:{PASSWORD}"));
    std::fs::write(
        t2.dir.path().join("auth.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.addr),
    )
    .expect("write auth.json");
    t2.store
        .pull(&image, None)
        .await
        .expect("pull with the auth file's credentials");
    // The request's credentials win over the auth file's.
    let t3 = TestStore::new(&conf);
    std::fs::copy(
        t2.dir.path().join("auth.json"),
        t3.dir.path().join("auth.json"),
    )
    .expect("copy auth.json");
    let err = t3
        .store
        .pull(&image, Some(&basic(USER, "wrong")))
        .await
        .expect_err("the request's wrong password is used");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert_nothing_left(&t3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_trusted_through_certs_d_or_insecure() {
    let setup = Setup {
        htpasswd: None,
        tls: true,
    };
    let Some(reg) = extra("tls_registry_trusted_through_certs_d_or_insecure", &setup) else {
        return;
    };
    let image = format!("{}/registry.k8s.io/pause:3.9", reg.addr);

    // No registries.conf entry: HTTPS, verified; the test CA is unknown.
    let t = TestStore::new("");
    let err = t.store.pull(&image, None).await.expect_err("untrusted TLS");
    let msg = chain(&err);
    assert_eq!(err.kind(), ErrorKind::Registry, "{msg}");
    assert!(
        msg.contains(&reg.addr) && msg.to_lowercase().contains("certificate"),
        "the message names the registry and the certificate problem: {msg}"
    );
    assert_nothing_left(&t);

    // The CA in certs.d/HOST:PORT/ca.crt: trusted for that registry.
    let host_dir = t.dir.path().join("certs.d").join(&reg.addr);
    std::fs::create_dir_all(&host_dir).expect("mkdir certs.d");
    std::fs::copy(reg.ca_cert(), host_dir.join("ca.crt")).expect("copy ca.crt");
    let rec = t
        .store
        .pull(&image, None)
        .await
        .expect("pull with the CA from certs.d");
    assert_eq!(rec.repo_tags, std::slice::from_ref(&image));

    // A CA under another host's directory does not help this one.
    let t2 = TestStore::new("");
    let other = t2.dir.path().join("certs.d/127.0.0.1:1");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::copy(reg.ca_cert(), other.join("ca.crt")).expect("copy ca.crt");
    t2.store
        .pull(&image, None)
        .await
        .expect_err("a CA trusted for another host");
    assert_nothing_left(&t2);

    // insecure = true: HTTPS without verification.
    let t3 = TestStore::new(&format!(
        "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
        reg.addr
    ));
    t3.store
        .pull(&image, None)
        .await
        .expect("insecure registry pulls without the CA");
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
