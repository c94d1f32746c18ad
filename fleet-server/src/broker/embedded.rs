//! The embedded MQTT broker (rmqtt), TLS with client certificates required.
//!
//! Every client is identified by its certificate's CN (`cert_cn_as_username`), and the
//! [`super::policy`] decides connect, publish and subscribe through hooks registered above any
//! other handler. Pitfalls handled here (docs/architecture.md, crate pitfalls): `reuseaddr` so a restart
//! within a minute can bind again; `run()` is spawned ourselves because `start()` exits the
//! process when a listener fails; the per-session queue is raised so a burst to the server's
//! session is not silently dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use common::ids::Identity;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::types::{AuthResult, LastWill, PublishAclResult, SubscribeAclResult};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::policy::{self, Refusal};
use super::sessions::{SessionHook, SessionObserver};
use crate::ingest::writer::{IngestItem, WriteError};

/// Hook priority: above rmqtt's own handlers and any plugin.
const POLICY_PRIORITY: u32 = 1_000_000;

/// Messages queued per session before the broker drops (the server's session takes bursts).
const MAX_SESSION_QUEUE: usize = 1_000_000;

/// In-flight QoS 1 window per session.
const MAX_INFLIGHT: u16 = 512;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Devices and readers are refused until this is true: the server's own session must be
    /// subscribed first, or what they publish would be acknowledged to them and go nowhere.
    pub ready: Arc<AtomicBool>,
    /// Where device records go before the broker acknowledges them (see [`crate::ingest::writer`]).
    pub writer: mpsc::Sender<IngestItem>,
    /// Told of every device session that starts and ends (several instances: who holds
    /// which machine); None with one instance.
    pub sessions: Option<SessionObserver>,
}

/// Refusals counted by the broker, by reason.
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub connects_allowed: AtomicU64,
    pub connects_refused: AtomicU64,
    pub connects_not_ready: AtomicU64,
    pub publishes_refused: AtomicU64,
    pub subscribes_refused: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct BrokerStatsSnapshot {
    pub connects_allowed: u64,
    pub connects_refused: u64,
    pub connects_not_ready: u64,
    pub publishes_refused: u64,
    pub subscribes_refused: u64,
}

impl BrokerStats {
    pub fn snapshot(&self) -> BrokerStatsSnapshot {
        BrokerStatsSnapshot {
            connects_allowed: self.connects_allowed.load(Ordering::Relaxed),
            connects_refused: self.connects_refused.load(Ordering::Relaxed),
            connects_not_ready: self.connects_not_ready.load(Ordering::Relaxed),
            publishes_refused: self.publishes_refused.load(Ordering::Relaxed),
            subscribes_refused: self.subscribes_refused.load(Ordering::Relaxed),
        }
    }
}

/// A running embedded broker. Dropping it does not stop it: call [`EmbeddedBroker::stop`].
pub struct EmbeddedBroker {
    pub local_addr: SocketAddr,
    pub stats: Arc<BrokerStats>,
    task: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Binds the TLS listener and starts serving on the current tokio runtime.
    pub async fn start(cfg: &BrokerConfig) -> anyhow::Result<EmbeddedBroker> {
        for p in [&cfg.ca, &cfg.cert, &cfg.key] {
            anyhow::ensure!(p.exists(), "broker TLS file {} does not exist", p.display());
        }
        let scx = ServerContext::new().node_id(1).build().await;
        let stats = Arc::new(BrokerStats::default());
        let register = scx.extends.hook_mgr().register();
        for typ in [
            Type::ClientAuthenticate,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
        ] {
            register
                .add_priority(
                    typ,
                    POLICY_PRIORITY,
                    Box::new(PolicyHook {
                        stats: stats.clone(),
                        ready: cfg.ready.clone(),
                        writer: cfg.writer.clone(),
                    }),
                )
                .await;
        }
        if let Some(SessionObserver(events)) = &cfg.sessions {
            for typ in [Type::ClientConnected, Type::ClientDisconnected] {
                register
                    .add_priority(
                        typ,
                        POLICY_PRIORITY,
                        Box::new(SessionHook {
                            events: events.clone(),
                        }),
                    )
                    .await;
            }
        }
        register.start().await;

        let listener = Builder::new()
            .name("mqtts")
            .laddr(cfg.listen)
            .reuseaddr(Some(true))
            // small packets answered at once (PUBACKs, commands): no Nagle delay
            .nodelay(true)
            .allow_anonymous(false)
            .max_mqueue_len(MAX_SESSION_QUEUE)
            .max_inflight(std::num::NonZeroU16::new(MAX_INFLIGHT).unwrap_or(std::num::NonZeroU16::MIN))
            .handshake_timeout(Duration::from_secs(10))
            .tls_cross_certificate(true)
            .tls_cert(Some(cfg.cert.to_string_lossy().into_owned()))
            .tls_key(Some(cfg.key.to_string_lossy().into_owned()))
            .tls_client_ca_certs(Some(cfg.ca.to_string_lossy().into_owned()))
            .cert_cn_as_username(true)
            .collect_cert_info(true)
            .bind()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot bind the MQTT listener on {}", cfg.listen))?
            .tls()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("cannot set up TLS for the MQTT listener")?;
        let local_addr = listener.local_addr().map_err(|e| anyhow::anyhow!("{e}"))?;
        let server = MqttServer::new(scx).listener_by_id(listener, 1).build();
        let task = tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        });
        tracing::info!(addr = %local_addr, "embedded broker listening (mTLS)");
        Ok(EmbeddedBroker {
            local_addr,
            stats,
            task,
        })
    }

    /// Stops accepting connections. Sessions already open end with the runtime.
    pub fn stop(&self) {
        self.task.abort();
    }
}

struct PolicyHook {
    stats: Arc<BrokerStats>,
    ready: Arc<AtomicBool>,
    writer: mpsc::Sender<IngestItem>,
}

/// What the hook does with a parameter: answer now, or store the record first.
enum Decision {
    Now(ReturnType),
    StoreThenAllow(IngestItem, oneshot::Receiver<Result<(), WriteError>>),
}

fn identity_of(username: Option<&str>) -> Option<Identity> {
    username.and_then(Identity::from_common_name)
}

// Written out rather than with `#[async_trait]`: the trait's elided lifetime in `&Parameter`
// does not survive the macro under edition 2024, and the decision needs no `.await` anyway.
impl Handler for PolicyHook {
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
        match self.decide(param, acc) {
            Decision::Now(r) => Box::pin(std::future::ready(r)),
            Decision::StoreThenAllow(item, rx) => {
                let writer = self.writer.clone();
                Box::pin(async move {
                    let refused = if writer.send(item).await.is_err() {
                        Some("the ingest writer is stopped".to_string())
                    } else {
                        match rx.await {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(_) => Some("the ingest writer dropped the record".to_string()),
                        }
                    };
                    if let Some(error) = refused {
                        // Not stored: refuse, so the agent keeps the record and sends it again.
                        tracing::error!(error = %error, "record not stored; publish refused");
                        (
                            false,
                            Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                                true, None,
                            ))),
                        )
                    } else {
                        (
                            false,
                            Some(HookResult::PublishAclResult(PublishAclResult::allow())),
                        )
                    }
                })
            }
        }
    }
}

impl PolicyHook {
    fn decide(&self, param: &Parameter<'_>, acc: Option<HookResult>) -> Decision {
        if let Parameter::MessagePublishCheckAcl(session, publish) = param
            && let Some(Identity::Device(me)) = identity_of(session.id.username.as_deref())
            && policy::may_publish(&Identity::Device(me.clone()), &publish.topic)
            && let Ok(common::topics::Topic::Device { kind, .. }) =
                common::topics::Topic::parse(&publish.topic)
            && kind != common::topics::Kind::State
        {
            let (tx, rx) = oneshot::channel();
            return Decision::StoreThenAllow(
                IngestItem {
                    device: me,
                    kind,
                    payload: publish.payload.to_vec(),
                    reply: Some(tx),
                },
                rx,
            );
        }
        Decision::Now(self.decide_now(param, acc))
    }

    fn decide_now(&self, param: &Parameter<'_>, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(ci) => {
                let cn = ci.cert().and_then(|c| c.common_name.clone());
                let username = ci.id().username.as_ref().map(|u| u.to_string());
                let will = ci.last_will().map(|w| match w {
                    LastWill::V3(w) => w.topic.to_string(),
                    LastWill::V5(w) => w.topic.to_string(),
                });
                match policy::authorize_connect(
                    cn.as_deref(),
                    username.as_deref(),
                    ci.client_id(),
                    will.as_deref(),
                ) {
                    Ok(id) if id != Identity::Server && !self.ready.load(Ordering::Acquire) => {
                        self.stats.connects_not_ready.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(client = %ci.client_id(), "connection deferred: server not subscribed yet");
                        (false, Some(HookResult::AuthResult(AuthResult::NotAuthorized)))
                    }
                    Ok(_) => {
                        self.stats.connects_allowed.fetch_add(1, Ordering::Relaxed);
                        (
                            false,
                            Some(HookResult::AuthResult(AuthResult::Allow(false, None))),
                        )
                    }
                    Err(refusal) => {
                        self.refused_connect(refusal, cn.as_deref(), ci.client_id());
                        (false, Some(HookResult::AuthResult(AuthResult::NotAuthorized)))
                    }
                }
            }
            Parameter::ClientSubscribeCheckAcl(session, sub) => {
                let who = identity_of(session.id.username.as_deref());
                let ok = who
                    .as_ref()
                    .is_some_and(|id| policy::may_subscribe(id, &sub.topic_filter));
                if ok {
                    (
                        false,
                        Some(HookResult::SubscribeAclResult(SubscribeAclResult::new_success(
                            sub.opts.qos(),
                            None,
                        ))),
                    )
                } else {
                    self.stats.subscribes_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(client = %session.id.client_id, filter = %sub.topic_filter, "subscribe refused by policy");
                    (
                        false,
                        Some(HookResult::SubscribeAclResult(SubscribeAclResult::new_failure(
                            SubscribeAckReason::NotAuthorized,
                        ))),
                    )
                }
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let who = identity_of(session.id.username.as_deref());
                let ok = who
                    .as_ref()
                    .is_some_and(|id| policy::may_publish(id, &publish.topic));
                if ok {
                    (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::allow())),
                    )
                } else {
                    self.stats.publishes_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(client = %session.id.client_id, topic = %publish.topic, "publish refused by policy");
                    // Disconnect: a QoS 1 publisher then gets no PUBACK and cannot believe
                    // the record was delivered.
                    (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                            true, None,
                        ))),
                    )
                }
            }
            _ => (true, acc),
        }
    }

    fn refused_connect(&self, refusal: Refusal, cn: Option<&str>, client_id: &str) {
        self.stats.connects_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason = refusal.label(),
            cn = cn.unwrap_or("-"),
            client = %client_id,
            "connection refused by policy"
        );
    }
}
