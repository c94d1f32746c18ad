//! `session_owners` and the cluster's wake-ups on PostgreSQL: the upsert of a session this
//! instance accepted, the re-read of the rows of the sessions it holds, and the one dedicated
//! connection that LISTENs on `fleet_session` and `fleet_command`.
//!
//! LISTEN needs a connection of its own, outside the pool: a pooled connection is handed to
//! other statements and its notifications would be lost between them. The listener
//! reconnects with backoff; after every (re)connect it reports [`Wake::Resync`], since
//! notifications sent while it was away are gone (NOTIFY is a wake-up, the tables are the
//! truth).

use std::time::Duration;

use common::DeviceId;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::owners::{self, Owner};
use crate::pg::store::PgStore;
use crate::pg::{PgError, describe};

/// The channel the `session_owners` trigger notifies.
pub const SESSION_CHANNEL: &str = "fleet_session";
/// The channel the `command_outbox` trigger notifies.
pub const COMMAND_CHANNEL: &str = "fleet_command";
/// First wait before the listener connects again; doubled up to [`LISTEN_BACKOFF_MAX`].
pub const LISTEN_BACKOFF: Duration = Duration::from_millis(200);
pub const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// The listener (re)connected: whatever was notified meanwhile is lost; re-read.
    Resync,
    /// `fleet_session`: a machine's session owner changed.
    Session(Owner),
    /// `fleet_command`: a command for this machine is in the outbox.
    Command(DeviceId),
    /// A payload that could not be read (counted, logged).
    Malformed(String),
}

/// Records that this instance's broker accepted a session of `device`: the row names this
/// instance, its epoch one more than before (1 for a new machine), `since` now. The epoch.
pub async fn upsert_owner(store: &PgStore, device: &DeviceId, me: &str) -> Result<i64, PgError> {
    let client = store.client().await?;
    let row = client
        .query_one(
            "INSERT INTO session_owners (device, instance, epoch, since) VALUES ($1, $2, 1, now())
             ON CONFLICT (device) DO UPDATE SET instance = EXCLUDED.instance,
                 epoch = session_owners.epoch + 1, since = EXCLUDED.since
             RETURNING epoch",
            &[&device.as_str(), &me],
        )
        .await
        .map_err(PgError::db("recording a session owner"))?;
    Ok(row.get(0))
}

/// The rows of `devices` (the machines whose sessions this instance holds).
pub async fn read_owners(store: &PgStore, devices: &[DeviceId]) -> Result<Vec<Owner>, PgError> {
    let client = store.client().await?;
    let ids: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
    let rows = client
        .query(
            "SELECT device, instance, epoch FROM session_owners WHERE device = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(PgError::db("reading session owners"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Owner {
                device: DeviceId::new(r.get::<_, &str>(0)).ok()?,
                instance: r.get(1),
                epoch: r.get(2),
            })
        })
        .collect())
}

/// Reads a notification of one of the two channels.
pub fn wake_of(channel: &str, payload: &str) -> Wake {
    match channel {
        SESSION_CHANNEL => match owners::parse_note(payload) {
            Ok(o) => Wake::Session(o),
            Err(e) => Wake::Malformed(e.to_string()),
        },
        COMMAND_CHANNEL => match DeviceId::new(payload) {
            Ok(d) => Wake::Command(d),
            Err(e) => Wake::Malformed(format!("fleet_command payload {payload:?}: {e}")),
        },
        other => Wake::Malformed(format!("notification on unexpected channel {other:?}")),
    }
}

/// LISTENs on both channels on a connection of its own, forever (until `tx` is closed),
/// reconnecting with backoff. Runs on the store's runtime.
pub async fn listen(cfg: tokio_postgres::Config, tx: mpsc::UnboundedSender<Wake>) {
    let mut backoff = LISTEN_BACKOFF;
    while !tx.is_closed() {
        match cfg.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (ntx, mut nrx) = mpsc::unbounded_channel();
                // the connection is driven here; notifications come out of it
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if ntx.send(wake_of(n.channel(), n.payload())).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %describe(&e), "session listener connection lost");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                let listening = client
                    .batch_execute(&format!("LISTEN {SESSION_CHANNEL}; LISTEN {COMMAND_CHANNEL}"))
                    .await;
                match listening {
                    Ok(()) => {
                        backoff = LISTEN_BACKOFF;
                        tracing::info!(
                            "session listener listening on {SESSION_CHANNEL} and {COMMAND_CHANNEL}"
                        );
                        if tx.send(Wake::Resync).is_err() {
                            driver.abort();
                            return;
                        }
                        while let Some(w) = nrx.recv().await {
                            if tx.send(w).is_err() {
                                driver.abort();
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %describe(&e), "LISTEN refused"),
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %describe(&e), "session listener cannot connect"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_by_channel_and_bad_payloads_say_why() {
        assert_eq!(
            wake_of(COMMAND_CHANNEL, "rvm1"),
            Wake::Command(DeviceId::new("rvm1").unwrap())
        );
        assert!(matches!(wake_of(SESSION_CHANNEL, "rvm1 a 3"), Wake::Session(o) if o.epoch == 3));
        assert!(
            matches!(wake_of(COMMAND_CHANNEL, "no/pe"), Wake::Malformed(m) if m.contains("fleet_command"))
        );
        assert!(
            matches!(wake_of(SESSION_CHANNEL, "rvm1"), Wake::Malformed(m) if m.contains("fleet_session"))
        );
        assert!(matches!(wake_of("other", "x"), Wake::Malformed(_)));
    }
}
