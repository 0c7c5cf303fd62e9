//! Pod name reservations (the kubelet's `name_namespace_uid_attempt`).
//!
//! One creation per name: a second request for a name whose creation is in
//! flight waits for it and gets the same pod; a finished creation whose
//! reply never reached the kubelet (it timed out and dropped the call) is
//! handed to the retry; only a name whose pod was already delivered is
//! "reserved".

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

type Outcome = Option<Result<String, tonic::Status>>;

enum Entry {
    InFlight(watch::Receiver<Outcome>),
    Owned { id: String, delivered: bool },
}

/// The reservations of one daemon.
#[derive(Default, Clone)]
pub struct Reservations {
    map: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Reservations {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `create` once per name (see the module docs). `exists` tells
    /// whether an owned pod id is still alive.
    pub async fn run_once<F, Fut>(
        &self,
        key: &str,
        exists: impl Fn(&str) -> bool,
        create: F,
    ) -> Result<String, tonic::Status>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, tonic::Status>> + Send + 'static,
    {
        let mut rx = {
            let mut map = self.lock();
            match map.get_mut(key) {
                Some(Entry::Owned { id, delivered }) if exists(id) => {
                    if !*delivered {
                        *delivered = true;
                        tracing::info!(pod_id = %id, pod = key, "handing a pod created for a timed-out request to its retry");
                        return Ok(id.clone());
                    }
                    return Err(tonic::Status::already_exists(format!(
                        "pod sandbox name {key:?} is reserved for pod {id}; stop and remove that pod first"
                    )));
                }
                Some(Entry::InFlight(rx)) => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.to_owned(), Entry::InFlight(rx.clone()));
                    let creation = create();
                    let this = self.clone();
                    let key = key.to_owned();
                    // Detached: a caller that goes away does not cancel it.
                    tokio::spawn(async move {
                        let result = creation.await;
                        {
                            let mut map = this.lock();
                            match &result {
                                Ok(id) => {
                                    map.insert(
                                        key,
                                        Entry::Owned {
                                            id: id.clone(),
                                            delivered: false,
                                        },
                                    );
                                }
                                Err(_) => {
                                    map.remove(&key);
                                }
                            }
                        }
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        let result = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome
                .clone()
                .unwrap_or_else(|| Err(tonic::Status::internal("pod creation vanished"))),
            Err(_) => Err(tonic::Status::internal(
                "pod creation task ended without a result",
            )),
        };
        if let Ok(id) = &result
            && let Some(Entry::Owned {
                id: owned,
                delivered,
            }) = self.lock().get_mut(key)
            && owned == id
        {
            *delivered = true;
        }
        result
    }

    /// Records a pod loaded at start (its creation was answered long ago).
    pub fn restore(&self, key: &str, id: &str) {
        self.lock().insert(
            key.to_owned(),
            Entry::Owned {
                id: id.to_owned(),
                delivered: true,
            },
        );
    }

    /// Frees a name when its pod is removed.
    pub fn release(&self, key: &str, id: &str) {
        let mut map = self.lock();
        if matches!(map.get(key), Some(Entry::Owned { id: owned, .. }) if owned == id) {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_one_creation_and_then_the_name_is_reserved() {
        let r = Reservations::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let make = |calls: Arc<AtomicUsize>| {
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok("pod-1".to_owned())
            }
        };
        let (a, b) = tokio::join!(
            r.run_once("web_ns_u_0", |_| true, make(calls.clone())),
            r.run_once("web_ns_u_0", |_| true, make(calls.clone())),
        );
        assert_eq!(a.expect("first"), "pod-1");
        assert_eq!(b.expect("second"), "pod-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let err = r
            .run_once("web_ns_u_0", |_| true, make(calls.clone()))
            .await
            .expect_err("reserved");
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        assert!(err.message().contains("reserved for pod pod-1"));
    }

    #[tokio::test]
    async fn a_retry_after_a_dropped_request_gets_the_pod() {
        let r = Reservations::default();
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok("pod-2".to_owned())
        };
        // The kubelet's call times out: its future is dropped mid-creation.
        let timed_out =
            tokio::time::timeout(Duration::from_millis(10), r.run_once("k", |_| true, slow)).await;
        assert!(timed_out.is_err());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let retry = r
            .run_once("k", |_| true, || async { Ok("never".to_owned()) })
            .await
            .expect("retry");
        assert_eq!(retry, "pod-2", "no second pod");
    }

    #[tokio::test]
    async fn a_failed_creation_frees_the_name_and_a_removed_pod_too() {
        let r = Reservations::default();
        let err = r
            .run_once(
                "k",
                |_| true,
                || async { Err(tonic::Status::internal("boom")) },
            )
            .await
            .expect_err("fails");
        assert_eq!(err.message(), "boom");
        let id = r
            .run_once("k", |_| true, || async { Ok("p".to_owned()) })
            .await
            .expect("ok");
        r.release("k", &id);
        let again = r
            .run_once("k", |_| true, || async { Ok("q".to_owned()) })
            .await
            .expect("ok");
        assert_eq!(again, "q");
        // A pod that vanished without release does not hold its name.
        let fresh = r
            .run_once("k", |_| false, || async { Ok("z".to_owned()) })
            .await
            .expect("ok");
        assert_eq!(fresh, "z");
    }
}
