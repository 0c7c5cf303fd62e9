//! The ImageService end to end: the real daemon pulling the conformance test
//! images from the local registry through registry mirrors. Needs the
//! registry on 127.0.0.1:5000 with the test images (conformance/test-all.sh
//! starts it first).

mod common;

use common::{Sandbox, image_client, registry_ready, skip_unless_root};
use krio_proto::v1;

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const TAGS: [&str; 3] = [
    "gcr.io/k8s-staging-cri-tools/test-image-tags:1",
    "gcr.io/k8s-staging-cri-tools/test-image-tags:2",
    "gcr.io/k8s-staging-cri-tools/test-image-tags:3",
];

fn spec(image: &str) -> Option<v1::ImageSpec> {
    Some(v1::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn pull_list_status_and_remove_through_a_mirror() {
    if skip_unless_root("pull_list_status_and_remove_through_a_mirror")
        || !registry_ready("pull_list_status_and_remove_through_a_mirror")
    {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.use_local_registry();
    let daemon = sandbox.start();
    let mut images = image_client(&daemon.socket).await;

    let image_ref = images
        .pull_image(v1::PullImageRequest {
            image: spec(BUSYBOX),
            ..Default::default()
        })
        .await
        .expect("PullImage")
        .into_inner()
        .image_ref;
    assert!(
        image_ref.starts_with("sha256:") && image_ref.len() == 71,
        "{image_ref}"
    );

    let status = images
        .image_status(v1::ImageStatusRequest {
            image: spec(BUSYBOX),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    let image = status.image.expect("present");
    assert_eq!(image.id, image_ref);
    assert_eq!(image.repo_tags, [BUSYBOX]);
    assert!(image.repo_digests[0].starts_with("registry.k8s.io/e2e-test-images/busybox@sha256:"));
    assert!(image.size > 0);
    assert!(
        status.info["info"].contains("\"Cmd\""),
        "verbose info has the config"
    );
    // By ID too.
    let by_id = images
        .image_status(v1::ImageStatusRequest {
            image: spec(&image_ref),
            verbose: false,
        })
        .await
        .expect("ImageStatus by id")
        .into_inner();
    assert_eq!(by_id.image.expect("present").id, image_ref);

    // One manifest under three tags: one image with three repo tags.
    for tag in TAGS {
        images
            .pull_image(v1::PullImageRequest {
                image: spec(tag),
                ..Default::default()
            })
            .await
            .expect("pull tag");
    }
    let list = images
        .list_images(v1::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(list.len(), 2, "{list:?}");
    let tagged = list
        .iter()
        .find(|i| i.id != image_ref)
        .expect("the tags image");
    let mut tags = tagged.repo_tags.clone();
    tags.sort();
    assert_eq!(tags, TAGS);

    // Removing by one name removes the image with all its tags.
    images
        .remove_image(v1::RemoveImageRequest {
            image: spec(TAGS[1]),
        })
        .await
        .expect("RemoveImage");
    for tag in TAGS {
        let st = images
            .image_status(v1::ImageStatusRequest {
                image: spec(tag),
                verbose: false,
            })
            .await
            .expect("status")
            .into_inner();
        assert!(st.image.is_none(), "{tag} is gone");
    }
    images
        .remove_image(v1::RemoveImageRequest {
            image: spec(TAGS[1]),
        })
        .await
        .expect("removing an absent image is fine");

    // Images persist across a restart.
    drop(images);
    let out = daemon.terminate();
    assert!(out.status.success());
    let daemon = sandbox.start();
    let mut images = image_client(&daemon.socket).await;
    let list = images
        .list_images(v1::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(
        list.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [image_ref.as_str()]
    );
}

#[tokio::test]
async fn bad_references_are_invalid_argument() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let mut images = image_client(&daemon.socket).await;
    for bad in ["UPPER/case:tag", "busybox@sha256:nothex", ""] {
        let err = images
            .pull_image(v1::PullImageRequest {
                image: spec(bad),
                ..Default::default()
            })
            .await
            .expect_err("invalid reference");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{bad}: {}",
            err.message()
        );
    }
    let err = images
        .image_status(v1::ImageStatusRequest {
            image: None,
            verbose: false,
        })
        .await
        .expect_err("no image");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// Extra registry instances (htpasswd, TLS) shared with the image crate's
/// tests.
#[path = "../../image/tests/common/extra.rs"]
#[allow(dead_code)]
mod extra;

#[tokio::test]
async fn registry_auth_and_tls_through_the_daemon() {
    let test = "registry_auth_and_tls_through_the_daemon";
    if skip_unless_root(test) || !registry_ready(test) {
        return;
    }
    let start = |setup: &extra::Setup| match extra::ExtraRegistry::start(setup) {
        Ok(r) => Some(r),
        Err(why) => {
            if std::env::var_os("KRIO_REQUIRE_ROOT_TESTS").is_some() {
                panic!("{test}: an extra registry is required but {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    };
    let Some(auth_reg) = start(&extra::Setup {
        htpasswd: Some(("krio-user".into(), "krio-pass-2".into())),
        tls: false,
    }) else {
        return;
    };
    let Some(tls_reg) = start(&extra::Setup {
        htpasswd: None,
        tls: true,
    }) else {
        return;
    };
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("registries.conf"),
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            auth_reg.addr
        ),
    )
    .expect("write registries.conf");
    std::fs::write(
        sandbox.path("krio.toml"),
        format!(
            "[image]\nregistries_conf = \"{}\"\ncerts_dir = \"{}\"\n",
            sandbox.path("registries.conf").display(),
            sandbox.path("certs.d").display()
        ),
    )
    .expect("write krio.toml");
    let daemon = sandbox.start();
    let mut images = image_client(&daemon.socket).await;
    let pull = |image: String, auth: Option<v1::AuthConfig>| v1::PullImageRequest {
        image: spec(&image),
        auth,
        ..Default::default()
    };
    let on_auth = format!("{}/registry.k8s.io/pause:3.9", auth_reg.addr);
    let wrong = v1::AuthConfig {
        username: "krio-user".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    for auth in [None, Some(wrong)] {
        let err = images
            .pull_image(pull(on_auth.clone(), auth))
            .await
            .expect_err("pull without the right credentials");
        assert_eq!(
            err.code(),
            tonic::Code::Unauthenticated,
            "{}",
            err.message()
        );
        assert!(
            err.message().contains(&auth_reg.addr),
            "the message names the registry: {}",
            err.message()
        );
    }
    let right = v1::AuthConfig {
        username: "krio-user".into(),
        password: "krio-pass-2".into(),
        ..Default::default()
    };
    let image_ref = images
        .pull_image(pull(on_auth.clone(), Some(right)))
        .await
        .expect("pull with the right credentials")
        .into_inner()
        .image_ref;

    // TLS with an unknown CA: Unavailable, saying why; then trusted
    // through certs.d without a restart.
    let on_tls = format!("{}/registry.k8s.io/pause:3.9", tls_reg.addr);
    let err = images
        .pull_image(pull(on_tls.clone(), None))
        .await
        .expect_err("untrusted certificate");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert!(
        err.message().to_lowercase().contains("certificate"),
        "the message says it is the certificate: {}",
        err.message()
    );
    let host_dir = sandbox.path("certs.d").join(&tls_reg.addr);
    std::fs::create_dir_all(&host_dir).expect("mkdir certs.d");
    std::fs::copy(tls_reg.ca_cert(), host_dir.join("ca.crt")).expect("copy ca.crt");
    images
        .pull_image(pull(on_tls.clone(), None))
        .await
        .expect("pull with the CA in certs.d");

    // Only the two successful pulls left records (one image, two names).
    let list = images
        .list_images(v1::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].id, image_ref);
    let mut tags = list[0].repo_tags.clone();
    tags.sort();
    let mut want = vec![on_auth, on_tls];
    want.sort();
    assert_eq!(tags, want);
}
