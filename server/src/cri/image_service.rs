//! The tonic `ImageService`: one line per RPC, calling its handler. RPCs whose
//! issue has not landed answer `Unimplemented`, naming the RPC.

use std::sync::Arc;

use krio_proto::v1;
use tonic::{Request, Response, Status};

use super::{Daemon, ResponseStream, image_fs};
use crate::error::Error;

const SERVICE: &str = "ImageService";

/// The CRI `ImageService`.
#[derive(Debug, Clone)]
pub struct ImageService {
    daemon: Arc<Daemon>,
}

impl ImageService {
    /// The service over the daemon's state.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }

    /// Usage of the image store and of the containers' writable layers, which
    /// share the root filesystem.
    async fn fs_usage(&self) -> Result<v1::ImageFsInfoResponse, Error> {
        let images = self.daemon.config.root.join("images");
        let containers = self.daemon.config.root.join("containers");
        let (images, containers) = tokio::task::spawn_blocking(move || {
            Ok::<_, std::io::Error>((
                image_fs::dir_usage(&images)?,
                image_fs::dir_usage(&containers)?,
            ))
        })
        .await
        .map_err(|e| Error::internal("measuring the image filesystem", e))?
        .map_err(|e| Error::internal("measuring the image filesystem", e))?;
        let now = crate::clock::now_ns();
        Ok(v1::ImageFsInfoResponse {
            image_filesystems: vec![image_fs::filesystem_usage(&images, now)],
            container_filesystems: vec![image_fs::filesystem_usage(&containers, now)],
        })
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> v1::image_service_server::ImageServiceServer<Self> {
        v1::image_service_server::ImageServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl v1::image_service_server::ImageService for ImageService {
    async fn list_images(
        &self,
        _req: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        Err(Error::unimplemented(SERVICE, "ListImages").into())
    }

    type StreamImagesStream = ResponseStream<v1::StreamImagesResponse>;

    async fn stream_images(
        &self,
        _req: Request<v1::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Err(Error::unimplemented(SERVICE, "StreamImages").into())
    }

    async fn image_status(
        &self,
        _req: Request<v1::ImageStatusRequest>,
    ) -> Result<Response<v1::ImageStatusResponse>, Status> {
        Err(Error::unimplemented(SERVICE, "ImageStatus").into())
    }

    async fn pull_image(
        &self,
        _req: Request<v1::PullImageRequest>,
    ) -> Result<Response<v1::PullImageResponse>, Status> {
        Err(Error::unimplemented(SERVICE, "PullImage").into())
    }

    async fn remove_image(
        &self,
        _req: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        Err(Error::unimplemented(SERVICE, "RemoveImage").into())
    }

    async fn image_fs_info(
        &self,
        _req: Request<v1::ImageFsInfoRequest>,
    ) -> Result<Response<v1::ImageFsInfoResponse>, Status> {
        Ok(Response::new(self.fs_usage().await?))
    }
}
