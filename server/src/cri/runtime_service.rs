//! The tonic `RuntimeService`: one line per RPC, calling its handler.

use std::sync::Arc;

use krio_proto::v1;
use tonic::{Request, Response, Status};

use super::runtime_info;
use super::{Daemon, ResponseStream, blocking, stream_each};
use crate::container::ContainerFilter;
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::sandbox::PodFilter;

/// The CRI `RuntimeService`.
#[derive(Debug, Clone)]
pub struct RuntimeService {
    daemon: Arc<Daemon>,
}

impl RuntimeService {
    /// The service over the daemon's state.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> v1::runtime_service_server::RuntimeServiceServer<Self> {
        v1::runtime_service_server::RuntimeServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl v1::runtime_service_server::RuntimeService for RuntimeService {
    async fn version(
        &self,
        req: Request<v1::VersionRequest>,
    ) -> Result<Response<v1::VersionResponse>, Status> {
        Ok(Response::new(runtime_info::version(req.get_ref())))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<v1::RunPodSandboxRequest>,
    ) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
        let pod_sandbox_id = self.daemon.sandboxes.run(req.get_ref()).await?;
        // A pod is created running: both events, as the kubelet expects.
        for kind in [EventKind::Created, EventKind::Started] {
            self.daemon
                .events
                .send(Event::now(kind, &pod_sandbox_id, &pod_sandbox_id));
        }
        Ok(Response::new(v1::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<v1::StopPodSandboxRequest>,
    ) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
        let pod_id = req.get_ref().pod_sandbox_id.clone();
        let pod = self.daemon.sandboxes.get(&pod_id)?;
        if let Some(pod) = pod.clone() {
            let containers = self.daemon.containers.clone();
            blocking("stopping the pod's containers", move || {
                for id in containers.of_pod(&pod.id) {
                    containers.stop(&id, 0)?;
                }
                Ok::<_, Error>(())
            })
            .await?;
        }
        self.daemon.sandboxes.stop(&pod_id).await?;
        if let Some(pod) = pod.filter(|p| p.state == crate::state::PodState::Ready) {
            self.daemon
                .events
                .send(Event::now(EventKind::Stopped, &pod.id, &pod.id));
        }
        Ok(Response::new(v1::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<v1::RemovePodSandboxRequest>,
    ) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
        let pod_id = req.get_ref().pod_sandbox_id.clone();
        let pod = self.daemon.sandboxes.get(&pod_id)?;
        if let Some(pod) = pod.clone() {
            let containers = self.daemon.containers.clone();
            blocking("removing the pod's containers", move || {
                for id in containers.of_pod(&pod.id) {
                    containers.remove(&id)?;
                }
                Ok::<_, Error>(())
            })
            .await?;
        }
        // Taken before the removal: afterwards there is no pod to describe.
        let last_status = pod
            .as_ref()
            .and_then(|p| self.daemon.sandboxes.status(&p.id, false).ok())
            .and_then(|r| r.status);
        self.daemon.sandboxes.remove(&pod_id).await?;
        if let (Some(pod), Some(mut status)) = (pod, last_status) {
            status.state = v1::PodSandboxState::SandboxNotready as i32;
            let mut event = Event::now(EventKind::Deleted, &pod.id, &pod.id);
            event.pod_status = Some(status);
            self.daemon.events.send(event);
        }
        Ok(Response::new(v1::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<v1::PodSandboxStatusRequest>,
    ) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
        let req = req.get_ref();
        let mut response = self
            .daemon
            .sandboxes
            .status(&req.pod_sandbox_id, req.verbose)?;
        // What the kubelet's evented PLEG reads beside the pod's own status.
        if let Some(id) = response.status.as_ref().map(|s| s.id.clone()) {
            let containers = self.daemon.containers.clone();
            response.containers_statuses = blocking("reading the pod's containers", move || {
                Ok::<_, Error>(containers.statuses_of_pod(&id))
            })
            .await?;
        }
        response.timestamp = crate::clock::now_ns();
        Ok(Response::new(response))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<v1::ListPodSandboxRequest>,
    ) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
        let filter = PodFilter::from_cri(req.get_ref().filter.as_ref());
        let items = self.daemon.sandboxes.list(&filter);
        Ok(Response::new(v1::ListPodSandboxResponse { items }))
    }

    type StreamPodSandboxesStream = ResponseStream<v1::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        req: Request<v1::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let filter = PodFilter::from_cri(req.get_ref().filter.as_ref());
        let items = self.daemon.sandboxes.list(&filter);
        Ok(Response::new(stream_each(items, |pod_sandbox| {
            v1::StreamPodSandboxesResponse {
                pod_sandboxes: vec![pod_sandbox],
            }
        })))
    }

    async fn create_container(
        &self,
        req: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let pod = self
            .daemon
            .sandboxes
            .get(&req.pod_sandbox_id)?
            .ok_or_else(|| {
                Error::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id))
            })?;
        let containers = self.daemon.containers.clone();
        let container_id = blocking("creating the container", move || {
            containers.create(&req, &pod)
        })
        .await?;
        Ok(Response::new(v1::CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        req: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let id = req.into_inner().container_id;
        blocking("starting the container", move || containers.start(&id)).await?;
        Ok(Response::new(v1::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let req = req.into_inner();
        blocking("stopping the container", move || {
            containers.stop(&req.container_id, req.timeout)
        })
        .await?;
        Ok(Response::new(v1::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let id = req.into_inner().container_id;
        blocking("removing the container", move || containers.remove(&id)).await?;
        Ok(Response::new(v1::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let filter = ContainerFilter::from_cri(req.get_ref().filter.as_ref());
        let containers = blocking("listing containers", move || {
            Ok::<_, Error>(containers.list(&filter))
        })
        .await?;
        Ok(Response::new(v1::ListContainersResponse { containers }))
    }

    type StreamContainersStream = ResponseStream<v1::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        req: Request<v1::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let containers = self.daemon.containers.clone();
        let filter = ContainerFilter::from_cri(req.get_ref().filter.as_ref());
        let items = blocking("listing containers", move || {
            Ok::<_, Error>(containers.list(&filter))
        })
        .await?;
        Ok(Response::new(stream_each(items, |container| {
            v1::StreamContainersResponse {
                containers: vec![container],
            }
        })))
    }

    async fn container_status(
        &self,
        req: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let req = req.into_inner();
        let status = blocking("reading the container status", move || {
            containers.status(&req.container_id, req.verbose)
        })
        .await?;
        Ok(Response::new(status))
    }

    async fn update_container_resources(
        &self,
        req: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let req = req.into_inner();
        blocking("updating the container's resources", move || {
            containers.update_resources(&req)
        })
        .await?;
        Ok(Response::new(v1::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<v1::ReopenContainerLogRequest>,
    ) -> Result<Response<v1::ReopenContainerLogResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let id = req.into_inner().container_id;
        blocking("reopening the container log", move || {
            containers.reopen_log(&id)
        })
        .await?;
        Ok(Response::new(v1::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<v1::ExecSyncResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let req = req.into_inner();
        let resp = blocking("running the command", move || containers.exec_sync(&req)).await?;
        Ok(Response::new(resp))
    }

    async fn exec(
        &self,
        req: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        Ok(Response::new(crate::streaming::rpc::exec(
            &self.daemon,
            req.get_ref(),
        )?))
    }

    async fn attach(
        &self,
        req: Request<v1::AttachRequest>,
    ) -> Result<Response<v1::AttachResponse>, Status> {
        Ok(Response::new(crate::streaming::rpc::attach(
            &self.daemon,
            req.get_ref(),
        )?))
    }

    async fn port_forward(
        &self,
        req: Request<v1::PortForwardRequest>,
    ) -> Result<Response<v1::PortForwardResponse>, Status> {
        Ok(Response::new(crate::streaming::rpc::port_forward(
            &self.daemon,
            req.get_ref(),
        )?))
    }

    async fn container_stats(
        &self,
        req: Request<v1::ContainerStatsRequest>,
    ) -> Result<Response<v1::ContainerStatsResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let id = req.into_inner().container_id;
        let stats = blocking("reading container stats", move || containers.stats(&id)).await?;
        Ok(Response::new(v1::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<v1::ListContainerStatsRequest>,
    ) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
        let containers = self.daemon.containers.clone();
        let filter = ContainerFilter::from_stats_filter(req.get_ref().filter.as_ref());
        let stats = blocking("reading container stats", move || {
            Ok::<_, Error>(containers.list_stats(&filter))
        })
        .await?;
        Ok(Response::new(v1::ListContainerStatsResponse { stats }))
    }

    type StreamContainerStatsStream = ResponseStream<v1::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        req: Request<v1::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let containers = self.daemon.containers.clone();
        let filter = ContainerFilter::from_stats_filter(req.get_ref().filter.as_ref());
        let items = blocking("reading container stats", move || {
            Ok::<_, Error>(containers.list_stats(&filter))
        })
        .await?;
        Ok(Response::new(stream_each(items, |stats| {
            v1::StreamContainerStatsResponse {
                container_stats: vec![stats],
            }
        })))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<v1::PodSandboxStatsRequest>,
    ) -> Result<Response<v1::PodSandboxStatsResponse>, Status> {
        let stats = super::pod_stats::one(&self.daemon, &req.get_ref().pod_sandbox_id).await?;
        Ok(Response::new(v1::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Result<Response<v1::ListPodSandboxStatsResponse>, Status> {
        let stats = super::pod_stats::list(&self.daemon, req.get_ref().filter.as_ref()).await?;
        Ok(Response::new(v1::ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxStatsStream = ResponseStream<v1::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<v1::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let stats = super::pod_stats::list(&self.daemon, req.get_ref().filter.as_ref()).await?;
        Ok(Response::new(stream_each(stats, |s| {
            v1::StreamPodSandboxStatsResponse {
                pod_sandbox_stats: vec![s],
            }
        })))
    }

    async fn update_runtime_config(
        &self,
        req: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<v1::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .get_ref()
            .runtime_config
            .as_ref()
            .and_then(|c| c.network_config.as_ref())
            .map(|n| n.pod_cidr.clone())
            .unwrap_or_default();
        // The CNI config owns addressing; the CIDR is recorded for operators.
        tracing::info!(pod_cidr = %cidr, "runtime config updated by the kubelet");
        Ok(Response::new(v1::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        Ok(Response::new(
            runtime_info::status(&self.daemon, req.get_ref()).await?,
        ))
    }

    async fn checkpoint_container(
        &self,
        _req: Request<v1::CheckpointContainerRequest>,
    ) -> Result<Response<v1::CheckpointContainerResponse>, Status> {
        Err(super::checkpoint::unsupported("CheckpointContainer").into())
    }

    async fn checkpoint_pod(
        &self,
        _req: Request<v1::CheckpointPodRequest>,
    ) -> Result<Response<v1::CheckpointPodResponse>, Status> {
        Err(super::checkpoint::unsupported("CheckpointPod").into())
    }

    async fn restore_pod(
        &self,
        _req: Request<v1::RestorePodRequest>,
    ) -> Result<Response<v1::RestorePodResponse>, Status> {
        Err(super::checkpoint::unsupported("RestorePod").into())
    }

    type GetContainerEventsStream = ResponseStream<v1::ContainerEventResponse>;

    async fn get_container_events(
        &self,
        _req: Request<v1::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        use tokio_stream::StreamExt;
        use tokio_stream::wrappers::BroadcastStream;
        use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
        let events = BroadcastStream::new(self.daemon.events.subscribe()).map(|item| {
            item.map_err(|BroadcastStreamRecvError::Lagged(missed)| {
                // A gap would leave the kubelet's cache wrong; ending the
                // stream makes it relist and subscribe again.
                Status::resource_exhausted(format!(
                    "the event stream fell behind and missed {missed} events; subscribe again"
                ))
            })
        });
        // Stop after the error instead of resuming past the gap.
        let mut failed = false;
        let events = events.take_while(move |item| {
            let keep = !failed;
            failed |= item.is_err();
            keep
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Result<Response<v1::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(v1::ListMetricDescriptorsResponse {
            descriptors: super::pod_metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = super::pod_metrics::list(&self.daemon).await?;
        Ok(Response::new(v1::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    type StreamPodSandboxMetricsStream = ResponseStream<v1::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<v1::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let items = super::pod_metrics::list(&self.daemon).await?;
        Ok(Response::new(stream_each(items, |m| {
            v1::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics: vec![m],
            }
        })))
    }

    async fn runtime_config(
        &self,
        _req: Request<v1::RuntimeConfigRequest>,
    ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
        Ok(Response::new(runtime_info::runtime_config(&self.daemon)))
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<v1::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<v1::UpdatePodSandboxResourcesResponse>, Status> {
        let sandboxes = self.daemon.sandboxes.clone();
        let req = req.into_inner();
        blocking("recording the pod's resources", move || {
            sandboxes.update_resources(&req)
        })
        .await?;
        Ok(Response::new(v1::UpdatePodSandboxResourcesResponse {}))
    }
}
