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
