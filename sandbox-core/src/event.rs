//! Lifecycle events of sandboxes ([`SandboxEvent`]) and the broadcast bus backends emit them
//! on ([`EventBus`]).

use std::time::SystemTime;

use futures::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::id::{SandboxId, SessionId, SnapshotId, TemplateKey};
use crate::sandbox::TerminationReason;

/// Events a backend's [`events`](crate::SandboxBackend::events) stream yields.
pub type EventStream = BoxStream<'static, Result<SandboxEvent>>;

/// Buffered events per subscriber before the oldest are dropped (the subscriber then receives
/// [`Error::EventsLagged`]).
pub const EVENT_BUFFER: usize = 1024;

/// Something that happened to a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxEvent {
    /// The sandbox.
    pub sandbox_id: SandboxId,
    /// Its session, when it has one.
    pub session_id: Option<SessionId>,
    /// When it happened.
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: SandboxEventKind,
}

impl SandboxEvent {
    /// An event that happens now.
    pub fn now(
        sandbox_id: SandboxId,
        session_id: Option<SessionId>,
        kind: SandboxEventKind,
    ) -> Self {
        Self {
            sandbox_id,
            session_id,
            at: SystemTime::now(),
            kind,
        }
    }
}

/// What happened to a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SandboxEventKind {
    /// Creation started.
    Creating,
    /// Ready for exec.
    Ready,
    /// Taken from a warm pool.
    WarmHit {
        /// The pool.
        template_key: TemplateKey,
    },
    /// A warm-pool sandbox became ready and waits to be taken.
    Warmed {
        /// The pool.
        template_key: TemplateKey,
    },
    /// A snapshot was taken.
    SnapshotTaken {
        /// The snapshot.
        snapshot_id: SnapshotId,
    },
    /// The sandbox was restored from a snapshot.
    Restored {
        /// The snapshot.
        snapshot_id: SnapshotId,
    },
    /// The sandbox is gone.
    Terminated {
        /// Why.
        reason: TerminationReason,
    },
    /// Its timeout passed (followed by `Terminated { reason: Expired }`).
    Expired,
    /// Creating or running it failed.
    Failed {
        /// The error, as text (never holds secrets).
        error: String,
    },
}

/// A broadcast channel of [`SandboxEvent`]s, one per backend instance. Cloning shares it.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<SandboxEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with [`EVENT_BUFFER`] slots per subscriber.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Sends an event to every current subscriber (none: dropped) and logs it at debug level.
    pub fn emit(&self, event: SandboxEvent) {
        tracing::debug!(sandbox_id = %event.sandbox_id, kind = ?event.kind, "sandbox event");
        let _ = self.tx.send(event);
    }

    /// Shorthand for `emit(SandboxEvent::now(..))`.
    pub fn emit_now(
        &self,
        sandbox_id: &SandboxId,
        session_id: Option<&SessionId>,
        kind: SandboxEventKind,
    ) {
        self.emit(SandboxEvent::now(
            sandbox_id.clone(),
            session_id.cloned(),
            kind,
        ));
    }

    /// A stream of the events emitted from now on. A subscriber that falls more than
    /// [`EVENT_BUFFER`] events behind receives one [`Error::EventsLagged`] and continues.
    pub fn subscribe(&self) -> EventStream {
        let rx = self.tx.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(event) => Some((Ok(event), rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Some((Err(Error::EventsLagged { missed }), rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_events_and_lag_is_reported() {
        let bus = EventBus::new();
        let mut s = bus.subscribe();
        let id = SandboxId::new("sbx-1").unwrap();
        bus.emit_now(&id, None, SandboxEventKind::Ready);
        let e = s.next().await.unwrap().unwrap();
        assert_eq!(e.kind, SandboxEventKind::Ready);

        for _ in 0..EVENT_BUFFER + 5 {
            bus.emit_now(&id, None, SandboxEventKind::Creating);
        }
        match s.next().await.unwrap() {
            Err(Error::EventsLagged { missed }) => assert_eq!(missed, 5),
            other => panic!("expected lag, got {other:?}"),
        }
        assert!(s.next().await.unwrap().is_ok());
    }

    #[test]
    fn events_serialize_flat_with_a_type_tag() {
        let e = SandboxEvent {
            sandbox_id: SandboxId::new("sbx-1").unwrap(),
            session_id: Some(SessionId::new("s1").unwrap()),
            at: crate::time::from_unix_seconds(0),
            kind: SandboxEventKind::Terminated {
                reason: TerminationReason::Expired,
            },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "sandbox_id": "sbx-1", "session_id": "s1", "at": "1970-01-01T00:00:00.000Z",
                "type": "terminated", "reason": "expired"
            })
        );
        let back: SandboxEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
