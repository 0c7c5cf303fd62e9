//! The ImageService handlers, over the image store.

use std::collections::HashMap;

use krio_image::{CriUser, ImageRecord, ImageStore, RegistryAuth};
use krio_proto::v1;

use super::{Daemon, blocking};
use crate::error::{Error, Result};

fn image_name(spec: Option<&v1::ImageSpec>, field: &str) -> Result<String> {
    match spec.map(|s| s.image.trim()) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(Error::InvalidArgument(format!("{field}.image is required"))),
    }
}

/// The CRI view of an image record.
pub fn to_cri(record: &ImageRecord, pause_image: &str) -> v1::Image {
    let (uid, username) = match record.cri_user() {
        CriUser::None => (None, String::new()),
        CriUser::Uid(uid) => (Some(v1::Int64Value { value: uid }), String::new()),
        CriUser::Username(name) => (None, name),
    };
    let pause = krio_image::reference::ImageReference::parse(pause_image)
        .map(|r| r.to_string())
        .unwrap_or_default();
    v1::Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(v1::ImageSpec {
            image: record.id.clone(),
            ..Default::default()
        }),
        pinned: record.repo_tags.contains(&pause),
    }
}

/// `PullImage`: returns the image ID as the image ref.
pub async fn pull(daemon: &Daemon, req: &v1::PullImageRequest) -> Result<v1::PullImageResponse> {
    let name = image_name(req.image.as_ref(), "image")?;
    let auth = req.auth.as_ref().map(|a| RegistryAuth {
        username: a.username.clone(),
        password: a.password.clone(),
        auth: a.auth.clone(),
        server_address: a.server_address.clone(),
        identity_token: a.identity_token.clone(),
        registry_token: a.registry_token.clone(),
    });
    let started = std::time::Instant::now();
    let record = daemon.images.pull(&name, auth.as_ref()).await?;
    tracing::info!(image = %name, image_id = %record.id, size = record.size, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
    if let Some(metrics) = &daemon.metrics {
        metrics.record_pull(record.size, started.elapsed());
    }
    Ok(v1::PullImageResponse {
        image_ref: record.id,
    })
}

/// `ListImages` (and `StreamImages`): every image, or the one the filter names.
pub async fn list(daemon: &Daemon, filter: Option<&v1::ImageFilter>) -> Result<Vec<v1::Image>> {
    let store = daemon.images.clone();
    let wanted = filter
        .and_then(|f| f.image.as_ref())
        .map(|s| s.image.clone())
        .filter(|s| !s.is_empty());
    let records = blocking("listing images", move || match wanted {
        Some(name) => store.resolve(&name).map(|r| r.into_iter().collect()),
        None => store.list(),
    })
    .await?;
    let pause = &daemon.config.get().image.pause_image;
    Ok(records.iter().map(|r| to_cri(r, pause)).collect())
}

/// `ImageStatus`: an absent image is an empty answer, not an error.
pub async fn status(
    daemon: &Daemon,
    req: &v1::ImageStatusRequest,
) -> Result<v1::ImageStatusResponse> {
    let name = image_name(req.image.as_ref(), "image")?;
    let store = daemon.images.clone();
    let Some(record) = blocking("looking up the image", move || store.resolve(&name)).await? else {
        return Ok(v1::ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        let config: serde_json::Value =
            serde_json::from_str(&record.config_json).unwrap_or_default();
        let details = serde_json::json!({
            "imageSpec": config,
            "chainIDs": record.layers,
        });
        info.insert("info".to_owned(), details.to_string());
    }
    Ok(v1::ImageStatusResponse {
        image: Some(to_cri(&record, &daemon.config.get().image.pause_image)),
        info,
    })
}

/// `RemoveImage`: removes the image with all its names; an absent image is
/// already removed.
pub async fn remove(daemon: &Daemon, req: &v1::RemoveImageRequest) -> Result<()> {
    let name = image_name(req.image.as_ref(), "image")?;
    let store: ImageStore = daemon.images.clone();
    let removed = blocking("removing the image", move || store.remove(&name)).await?;
    if removed {
        tracing::info!(image = %req.image.as_ref().map(|s| s.image.as_str()).unwrap_or_default(), "removed image");
    }
    Ok(())
}

/// `ImageFsInfo`: the image store's filesystem; container writable layers
/// live on the same one.
pub async fn fs_info(daemon: &Daemon) -> Result<v1::ImageFsInfoResponse> {
    let store = daemon.images.clone();
    let usage = blocking("measuring the image filesystem", move || store.fs_usage()).await?;
    let now = crate::clock::now_ns();
    let fs = v1::FilesystemUsage {
        timestamp: now,
        fs_id: Some(v1::FilesystemIdentifier {
            mountpoint: usage.mountpoint.display().to_string(),
        }),
        used_bytes: Some(v1::UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(v1::UInt64Value {
            value: usage.inodes_used,
        }),
    };
    Ok(v1::ImageFsInfoResponse {
        image_filesystems: vec![fs.clone()],
        container_filesystems: vec![fs],
    })
}
