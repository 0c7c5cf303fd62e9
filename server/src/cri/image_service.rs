//! The tonic `ImageService`: one line per RPC, calling its handler. RPCs whose
//! issue has not landed answer `Unimplemented`, naming the RPC.

use std::sync::Arc;

use krio_proto::v1;
use tonic::{Request, Response, Status};

use super::{Daemon, ResponseStream, images, stream_each};

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

    /// The tonic server for this service.
    pub fn into_server(self) -> v1::image_service_server::ImageServiceServer<Self> {
        v1::image_service_server::ImageServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl v1::image_service_server::ImageService for ImageService {
    async fn list_images(
        &self,
        req: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let images = images::list(&self.daemon, req.get_ref().filter.as_ref()).await?;
        Ok(Response::new(v1::ListImagesResponse { images }))
    }

    type StreamImagesStream = ResponseStream<v1::StreamImagesResponse>;

    async fn stream_images(
        &self,
        req: Request<v1::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let images = images::list(&self.daemon, req.get_ref().filter.as_ref()).await?;
        Ok(Response::new(stream_each(images, |image| {
            v1::StreamImagesResponse {
                images: vec![image],
            }
        })))
    }

    async fn image_status(
        &self,
        req: Request<v1::ImageStatusRequest>,
    ) -> Result<Response<v1::ImageStatusResponse>, Status> {
        Ok(Response::new(
            images::status(&self.daemon, req.get_ref()).await?,
        ))
    }

    async fn pull_image(
        &self,
        req: Request<v1::PullImageRequest>,
    ) -> Result<Response<v1::PullImageResponse>, Status> {
        Ok(Response::new(
            images::pull(&self.daemon, req.get_ref()).await?,
        ))
    }

    async fn remove_image(
        &self,
        req: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        images::remove(&self.daemon, req.get_ref()).await?;
        Ok(Response::new(v1::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<v1::ImageFsInfoRequest>,
    ) -> Result<Response<v1::ImageFsInfoResponse>, Status> {
        Ok(Response::new(images::fs_info(&self.daemon).await?))
    }
}
