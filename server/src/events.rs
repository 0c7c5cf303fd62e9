//! Container and pod lifecycle events for `GetContainerEvents` (the
//! kubelet's evented PLEG).
//!
//! Producers (container transitions, sandbox RPCs, the exit watcher) run on
//! blocking threads and only queue a small [`Event`]; one dispatcher task
//! turns each into the CRI message, with the pod's status and its
//! containers' statuses as they are at dispatch, and fans it out to the
//! subscribed streams. With no subscriber, nothing is built.

use std::sync::Arc;

use krio_proto::v1;
use tokio::sync::{broadcast, mpsc};

use crate::cri::Daemon;

/// How many built events a slow subscriber may fall behind before its
/// stream ends (the kubelet then relists and subscribes again).
const SUBSCRIBER_BACKLOG: usize = 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created (a container) or started (a pod: it is created running).
    Created,
    /// Started.
    Started,
    /// Exited, or a pod stopped.
    Stopped,
    /// Removed.
    Deleted,
}

impl EventKind {
    fn cri(self) -> v1::ContainerEventType {
        match self {
            EventKind::Created => v1::ContainerEventType::ContainerCreatedEvent,
            EventKind::Started => v1::ContainerEventType::ContainerStartedEvent,
            EventKind::Stopped => v1::ContainerEventType::ContainerStoppedEvent,
            EventKind::Deleted => v1::ContainerEventType::ContainerDeletedEvent,
        }
    }
}

/// One lifecycle change, as queued by its producer.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The container's id, or the pod's for a pod event.
    pub id: String,
    /// The pod the container belongs to (the pod itself for a pod event).
    pub pod_id: String,
    /// When it happened, ns since the epoch.
    pub at_ns: i64,
    /// The pod's status taken before it was removed (pod `Deleted` events:
    /// at dispatch there is no pod left to ask).
    pub pod_status: Option<v1::PodSandboxStatus>,
}

impl Event {
    /// An event that happened now.
    pub fn now(kind: EventKind, id: &str, pod_id: &str) -> Self {
        Self {
            kind,
            id: id.to_owned(),
            pod_id: pod_id.to_owned(),
            at_ns: crate::clock::now_ns(),
            pod_status: None,
        }
    }
}

/// Where producers queue events. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct EventSink {
    queue: mpsc::UnboundedSender<Event>,
    out: broadcast::Sender<v1::ContainerEventResponse>,
}

impl EventSink {
    /// Queues an event, unless nobody listens (then there is nothing to do).
    pub fn send(&self, event: Event) {
        if self.out.receiver_count() == 0 {
            return;
        }
        tracing::debug!(id = %event.id, pod_id = %event.pod_id, kind = ?event.kind, "event");
        // Fails only once the dispatcher is gone, at shutdown.
        let _ = self.queue.send(event);
    }

    /// A new subscriber: every event built from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<v1::ContainerEventResponse> {
        self.out.subscribe()
    }
}

/// The producer side and the queue the dispatcher drains.
pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
    let (queue, rx) = mpsc::unbounded_channel();
    let (out, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
    (EventSink { queue, out }, rx)
}

/// Builds and fans out queued events until the queue closes. Statuses are
/// read on a blocking thread (they read exit files and the store).
pub async fn dispatch(daemon: Arc<Daemon>, mut queue: mpsc::UnboundedReceiver<Event>) {
    while let Some(event) = queue.recv().await {
        if daemon.events.out.receiver_count() == 0 {
            continue;
        }
        let d = daemon.clone();
        match tokio::task::spawn_blocking(move || build(&d, event)).await {
            Ok(Some(response)) => {
                let _ = daemon.events.out.send(response);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "building a container event failed"),
        }
    }
}

/// The CRI message for an event, or `None` when its pod is already gone
/// (the pod's own `Deleted` event carries what the kubelet needs).
fn build(daemon: &Daemon, event: Event) -> Option<v1::ContainerEventResponse> {
    let pod_status = match event.pod_status {
        Some(status) => status,
        None => daemon
            .sandboxes
            .status(&event.pod_id, false)
            .ok()
            .and_then(|r| r.status)?,
    };
    let containers_statuses = daemon.containers.statuses_of_pod(&event.pod_id);
    Some(v1::ContainerEventResponse {
        container_id: event.id,
        container_event_type: event.kind.cri() as i32,
        created_at: event.at_ns,
        pod_sandbox_status: Some(pod_status),
        containers_statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_queued_without_a_subscriber() {
        let (sink, mut queue) = channel();
        sink.send(Event::now(EventKind::Created, "c1", "p1"));
        assert!(queue.try_recv().is_err());
        let _rx = sink.subscribe();
        sink.send(Event::now(EventKind::Started, "c1", "p1"));
        let queued = queue.try_recv().expect("queued once subscribed");
        assert_eq!(queued.kind, EventKind::Started);
        assert_eq!(queued.id, "c1");
        assert!(queued.at_ns > 0);
    }

    #[test]
    fn kinds_map_to_the_cri_types() {
        assert_eq!(
            EventKind::Deleted.cri(),
            v1::ContainerEventType::ContainerDeletedEvent
        );
        assert_eq!(
            EventKind::Created.cri(),
            v1::ContainerEventType::ContainerCreatedEvent
        );
    }
}
