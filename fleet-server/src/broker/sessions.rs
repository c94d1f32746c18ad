//! Machine sessions of the embedded broker, for whoever tracks which instance holds them
//! ([`crate::sessions`] with several instances on PostgreSQL): a hook that reports each device
//! session that starts and ends, and a handle that can end one of them later.
//!
//! The broker knows nothing of the cluster: it reports through [`SessionEvents`] and ends a
//! session when told to. Reports must not block the broker's task, so implementations queue
//! them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::DeviceId;
use common::ids::Identity;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::Session;

/// How long ending a session may take before it is given up (rmqtt's own kick waits 5 s).
pub const KICK_TIMEOUT: Duration = Duration::from_secs(10);

/// Told of each device session the broker accepted and of each that ended.
pub trait SessionEvents: Send + Sync {
    /// A device's session is established (CONNACK sent).
    fn connected(&self, device: DeviceId, session: BrokerSession);
    /// A device's session ended (the client left, was kicked, or timed out).
    fn disconnected(&self, device: DeviceId, session: BrokerSession);
}

/// A [`SessionEvents`] receiver, as the broker's configuration holds it.
#[derive(Clone)]
pub struct SessionObserver(pub Arc<dyn SessionEvents>);

impl std::fmt::Debug for SessionObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionObserver")
    }
}

/// One session of the embedded broker: which one it is, and how to end it.
#[derive(Clone)]
pub struct BrokerSession {
    session: Session,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for BrokerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSession")
            .field("client_id", &self.client_id())
            .field("created_ms", &self.session.id.create_time)
            .finish()
    }
}

impl BrokerSession {
    pub fn client_id(&self) -> &str {
        &self.session.id.client_id
    }

    /// The same session (not only the same client id: a reconnect is another session).
    pub fn same(&self, other: &BrokerSession) -> bool {
        self.session.id == other.session.id
    }

    /// Ends this session if it is still the client id's current one (a newer session of the
    /// same client id on this broker is left alone). Runs on the broker's runtime; true when
    /// a session was ended.
    pub async fn kick(&self) -> bool {
        let s = self.session.clone();
        let job = self.runtime.spawn(async move {
            let mut entry = {
                let shared = s.scx.extends.shared().await;
                shared.entry(s.id.clone())
            };
            if entry.id_same() != Some(true) {
                return Ok(false);
            }
            entry = entry.try_lock().await?;
            entry.kick(true, true, true).await.map(|_| true)
        });
        match tokio::time::timeout(KICK_TIMEOUT, job).await {
            Ok(Ok(Ok(kicked))) => kicked,
            Ok(Ok(Err(e))) => {
                tracing::warn!(client = %self.client_id(), error = %e, "stale session not ended");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(client = %self.client_id(), error = %e, "ending a stale session failed");
                false
            }
            Err(_) => {
                tracing::warn!(client = %self.client_id(), "ending a stale session timed out");
                false
            }
        }
    }
}

/// The hook on `ClientConnected` and `ClientDisconnected`: reports device sessions.
pub(super) struct SessionHook {
    pub events: Arc<dyn SessionEvents>,
}

impl SessionHook {
    fn report(&self, param: &Parameter<'_>) {
        let (session, up) = match param {
            Parameter::ClientConnected(s) => (*s, true),
            Parameter::ClientDisconnected(s, _) => (*s, false),
            _ => return,
        };
        let Some(Identity::Device(device)) = session
            .id
            .username
            .as_deref()
            .and_then(Identity::from_common_name)
        else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let s = BrokerSession {
            session: session.clone(),
            runtime,
        };
        if up {
            self.events.connected(device, s);
        } else {
            self.events.disconnected(device, s);
        }
    }
}

// Written out rather than with `#[async_trait]`, as the policy hook is (see there).
impl Handler for SessionHook {
    fn hook<'life0, 'life1, 'async_trait>(
        &'life0 self,
        param: &'life1 Parameter<'_>,
        acc: Option<HookResult>,
    ) -> Pin<Box<dyn Future<Output = ReturnType> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.report(param);
        // only observes: the next handler runs, the result is unchanged
        Box::pin(std::future::ready((true, acc)))
    }
}
