//! [`BufferHandle`]: how the other actors reach the buffer actor, whichever incarnation of it
//! runs (the supervisor restarts it under a new address; see [`super::actor`]). Cheap to
//! clone, `Send` and `Sync`.
//!
//! - Appends ([`BufferHandle::append`]) wait up to [`RESTART_WAIT`] for a running buffer
//!   and are sent again when the actor went away before it handled them: a record made while
//!   the buffer restarts is stored once it is back. A message is one record; none waits for a
//!   flush.
//! - The link's acknowledgements and reads, one message per turn ([`BufferHandle::drain`];
//!   [`BufferHandle::ack`] and [`BufferHandle::read`] apart), fail at once while the buffer
//!   is down ([`CallError::Unavailable`]); the link keeps its acknowledgements and sends them
//!   again first when the buffer is back (a new incarnation notifies
//!   [`BufferHandle::appended`]).
//! - [`BufferHandle::stats`] reads the counters the actor published last, without a message.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::Notify;

use super::actor::{
    Ack, Append, Body, BufferActor, BufferParts, CallError, Close, Drain, Flush, Read, ReportDrops, Shared,
};
use super::queue::{Appended, BufferStats, Record};
use super::store::Key;

/// Longest an append waits for the buffer actor to be running (restarts back off up to the
/// supervisor's `backoff_max_ms`, 10 s by default).
pub const RESTART_WAIT: Duration = Duration::from_secs(15);

/// How the other actors reach the buffer actor (see the module doc).
#[derive(Clone)]
pub struct BufferHandle {
    shared: Arc<Shared>,
}

impl BufferParts {
    /// The handle the other actors use to reach this buffer's actor, whichever runs.
    pub fn handle(&self) -> BufferHandle {
        BufferHandle {
            shared: self.shared(),
        }
    }
}

impl BufferHandle {
    pub fn device(&self) -> &common::DeviceId {
        &self.shared.device
    }

    /// The buffer's counters as of its last change.
    pub fn stats(&self) -> BufferStats {
        self.shared.stats.borrow().clone()
    }

    /// Notified after every stored append and when a (re)started buffer actor runs: what the
    /// link waits on to read.
    pub fn appended(&self) -> Arc<Notify> {
        self.shared.appended.clone()
    }

    /// The running incarnation; waits up to `wait` for one (`None`: fail at once).
    async fn running(&self, wait: Option<Duration>) -> Result<Addr<BufferActor>, CallError> {
        let mut rx = self.shared.addr.subscribe();
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            if let Some(a) = rx.borrow_and_update().as_ref().filter(|a| a.connected()) {
                return Ok(a.clone());
            }
            let Some(deadline) = deadline else {
                return Err(CallError::Unavailable);
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(CallError::Unavailable),
            }
        }
    }

    /// Appends a record (see the module doc: waits for a restarted buffer).
    pub async fn append(&self, ts_ms: i64, body: Body) -> Result<Appended, CallError> {
        let body = Arc::new(body);
        let deadline = tokio::time::Instant::now() + RESTART_WAIT;
        loop {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            let addr = self.running(Some(wait)).await?;
            match addr
                .send(Append {
                    ts_ms,
                    body: body.clone(),
                })
                .await
            {
                Ok(r) => return r,
                // the actor stopped before it handled the message: send it to the next one
                Err(MailboxError::Closed) | Err(MailboxError::Timeout) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(CallError::Unavailable);
                    }
                }
            }
        }
    }

    /// Reports the drops not yet reported now (collection stops).
    pub async fn report_drops(&self, ts_ms: i64) -> Result<(), CallError> {
        let addr = self.running(Some(RESTART_WAIT)).await?;
        addr.send(ReportDrops { ts_ms })
            .await
            .map_err(|_| CallError::Unavailable)?
    }

    /// Up to `n` records of `class` after seq `after`; fails at once while the buffer is down.
    pub async fn read(&self, class: u8, after: Option<u64>, n: usize) -> Result<Vec<Record>, CallError> {
        let addr = self.running(None).await?;
        addr.send(Read { class, after, n })
            .await
            .map_err(|_| CallError::Unavailable)?
    }

    /// Deletes acknowledged records; how many were there. Fails at once while the buffer is
    /// down (an acknowledgement is safe to send again).
    pub async fn ack(&self, keys: Vec<Key>) -> Result<u64, CallError> {
        let addr = self.running(None).await?;
        addr.send(Ack(keys)).await.map_err(|_| CallError::Unavailable)?
    }

    /// The link's turn: deletes what the broker acknowledged, then up to `n` records to
    /// publish next (priority records after `after[0]`, then telemetry after `after[1]`), in
    /// one message. Fails at once while the buffer is down, having deleted nothing or only
    /// some of `acks` (an acknowledgement is safe to send again).
    pub async fn drain(
        &self,
        acks: Vec<Key>,
        after: [Option<u64>; Key::CLASSES],
        n: usize,
    ) -> Result<Vec<Record>, CallError> {
        let addr = self.running(None).await?;
        addr.send(Drain { acks, after, n })
            .await
            .map_err(|_| CallError::Unavailable)?
    }

    /// Makes everything appended so far durable.
    pub async fn flush(&self) -> Result<(), CallError> {
        let addr = self.running(Some(RESTART_WAIT)).await?;
        addr.send(Flush).await.map_err(|_| CallError::Unavailable)?
    }

    /// Closes the buffer and stops its actor for good (a buffer without a supervisor: the
    /// simulator's machines). A supervised buffer closes when the supervisor stops it.
    pub async fn close(&self) -> Result<(), CallError> {
        let addr = self.running(None).await?;
        addr.send(Close).await.map_err(|_| CallError::Unavailable)?
    }
}

#[cfg(test)]
mod tests {
    use common::{DeviceId, Telemetry};

    use super::*;
    use crate::buffer::{Buffer, Caps, FlushPolicy, MemStore, SledStore, Store};
    use crate::supervise::liveness::Liveness;

    fn build_parts(flush: FlushPolicy) -> (BufferParts, BufferHandle) {
        let core = Buffer::open(
            DeviceId::new("t1").unwrap(),
            Box::new(MemStore::default()) as Box<dyn Store>,
            Caps::default(),
            flush,
        )
        .unwrap();
        let parts = BufferParts::new(core);
        let h = parts.handle();
        (parts, h)
    }

    fn live() -> Arc<Liveness> {
        Arc::new(Liveness::new(common::time::now_ms()))
    }

    fn telemetry() -> Body {
        Body::Telemetry(Telemetry::default())
    }

    #[actix::test]
    async fn appends_reads_and_acks_go_through_the_actor_and_the_counters_follow() {
        let (parts, h) = build_parts(FlushPolicy::Batched { ms: 500 });
        parts.start(live());
        for _ in 0..3 {
            h.append(1, telemetry()).await.unwrap();
        }
        assert_eq!(h.stats().records, 3);
        let recs = h.read(Key::TELEMETRY, None, 10).await.unwrap();
        assert_eq!(recs.iter().map(|r| r.key.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(h.ack(vec![recs[0].key, recs[1].key]).await.unwrap(), 2);
        assert_eq!(
            h.ack(vec![recs[0].key]).await.unwrap(),
            0,
            "a repeated ack finds nothing"
        );
        let s = h.stats();
        assert_eq!((s.records, s.acked, s.last_seq), (1, 2, 3));
    }

    #[actix::test]
    async fn a_drain_acks_then_reads_priority_records_before_telemetry_within_its_room() {
        let (parts, h) = build_parts(FlushPolicy::Batched { ms: 500 });
        parts.start(live());
        let event = || {
            Body::Event(common::Event {
                severity: common::Severity::Info,
                kind: common::EventKind::Note,
                message: "x".into(),
            })
        };
        for b in [telemetry(), event(), telemetry(), event(), telemetry()] {
            h.append(1, b).await.unwrap();
        }
        let seqs = |r: &[Record]| r.iter().map(|r| r.key.seq).collect::<Vec<_>>();
        let first = h.drain(vec![], [None, None], 3).await.unwrap();
        assert_eq!(
            seqs(&first),
            vec![2, 4, 1],
            "events first, then telemetry, 3 at most"
        );
        let next = h
            .drain(first.iter().map(|r| r.key).collect(), [Some(4), Some(1)], 10)
            .await
            .unwrap();
        assert_eq!(seqs(&next), vec![3, 5], "after the cursors");
        assert_eq!((h.stats().records, h.stats().acked), (2, 3));
        assert!(h.drain(vec![], [Some(4), Some(5)], 10).await.unwrap().is_empty());
    }

    #[actix::test]
    async fn a_restarted_actor_reopens_the_same_store_and_hands_out_no_seq_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("b"), None).unwrap();
        let core = Buffer::open(
            DeviceId::new("t1").unwrap(),
            Box::new(store) as Box<dyn Store>,
            Caps::default(),
            FlushPolicy::Batched { ms: 50 },
        )
        .unwrap();
        let parts = BufferParts::new(core);
        let h = parts.handle();
        let first = parts.start(live());
        for _ in 0..5 {
            h.append(1, telemetry()).await.unwrap();
        }
        let recs = h.read(Key::TELEMETRY, None, 2).await.unwrap();
        h.ack(recs.iter().map(|r| r.key).collect()).await.unwrap();
        first.send(crate::messages::StopNow).await.unwrap();
        // down: the link's calls fail at once, an append waits for the next incarnation
        assert!(matches!(
            h.read(Key::TELEMETRY, None, 10).await,
            Err(CallError::Unavailable)
        ));
        let waiting = {
            let h = h.clone();
            actix::spawn(async move { h.append(2, telemetry()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        parts.start(live());
        assert_eq!(waiting.await.unwrap().unwrap(), Appended::Stored { seq: 6 });
        let seqs: Vec<u64> = h
            .read(Key::TELEMETRY, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.key.seq)
            .collect();
        assert_eq!(
            seqs,
            vec![3, 4, 5, 6],
            "nothing unacknowledged lost, nothing acknowledged back"
        );
        let s = h.stats();
        assert_eq!((s.records, s.appended, s.acked, s.dropped), (4, 6, 2, 0), "{s:?}");
    }

    /// A store in memory whose flushes are counted.
    #[derive(Default)]
    struct CountedFlushes {
        inner: MemStore,
        flushes: Arc<std::sync::atomic::AtomicU32>,
    }

    impl Store for CountedFlushes {
        fn insert(&mut self, key: Key, value: &[u8]) -> Result<(), crate::buffer::StoreError> {
            self.inner.insert(key, value)
        }
        fn remove(&mut self, key: Key) -> Result<Option<usize>, crate::buffer::StoreError> {
            self.inner.remove(key)
        }
        fn scan(
            &self,
            class: u8,
            after: Option<u64>,
            n: usize,
        ) -> Result<Vec<(Key, Vec<u8>)>, crate::buffer::StoreError> {
            self.inner.scan(class, after, n)
        }
        fn first(&self, class: u8) -> Result<Option<(Key, usize)>, crate::buffer::StoreError> {
            self.inner.first(class)
        }
        fn last(&self, class: u8) -> Result<Option<Key>, crate::buffer::StoreError> {
            self.inner.last(class)
        }
        fn count_and_bytes(&self) -> Result<(u64, u64), crate::buffer::StoreError> {
            self.inner.count_and_bytes()
        }
        fn last_seq(&self) -> Result<Option<u64>, crate::buffer::StoreError> {
            self.inner.last_seq()
        }
        fn set_last_seq(&mut self, seq: u64) -> Result<(), crate::buffer::StoreError> {
            self.inner.set_last_seq(seq)
        }
        fn pending_drops(&self) -> Result<Option<Vec<u8>>, crate::buffer::StoreError> {
            self.inner.pending_drops()
        }
        fn set_pending_drops(&mut self, value: Option<&[u8]>) -> Result<(), crate::buffer::StoreError> {
            self.inner.set_pending_drops(value)
        }
        fn flush(&self) -> Result<(), crate::buffer::StoreError> {
            Ok(())
        }
        fn flusher(&self) -> Option<crate::buffer::store::Flusher> {
            let n = self.flushes.clone();
            Some(Arc::new(move || {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }))
        }
        fn disk_bytes(&self) -> u64 {
            0
        }
    }

    fn build_counted(flush: FlushPolicy) -> (BufferParts, BufferHandle, Arc<std::sync::atomic::AtomicU32>) {
        let store = CountedFlushes::default();
        let flushes = store.flushes.clone();
        let core = Buffer::open(
            DeviceId::new("t1").unwrap(),
            Box::new(store) as Box<dyn Store>,
            Caps::default(),
            flush,
        )
        .unwrap();
        let parts = BufferParts::new(core);
        let h = parts.handle();
        (parts, h, flushes)
    }

    #[actix::test]
    async fn batched_appends_wait_for_no_flush_and_a_flush_request_is_answered_after_one() {
        let (parts, h, flushes) = build_counted(FlushPolicy::Batched { ms: 60_000 });
        parts.start(live());
        for _ in 0..100 {
            h.append(1, telemetry()).await.unwrap();
        }
        use std::sync::atomic::Ordering::SeqCst;
        assert_eq!(
            flushes.load(SeqCst),
            0,
            "no flush per record, and the timer is far off"
        );
        h.flush().await.unwrap();
        assert_eq!(flushes.load(SeqCst), 1);
    }

    #[actix::test]
    async fn with_every_record_appends_are_followed_by_flushes_and_a_burst_by_at_least_one() {
        let (parts, h, flushes) = build_counted(FlushPolicy::EveryRecord);
        parts.start(live());
        use std::sync::atomic::Ordering::SeqCst;
        h.append(1, telemetry()).await.unwrap();
        for _ in 0..100 {
            if flushes.load(SeqCst) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(flushes.load(SeqCst), 1, "one append, one flush");
        let burst: Vec<_> = (0..50)
            .map(|_| {
                let h = h.clone();
                actix::spawn(async move { h.append(1, telemetry()).await })
            })
            .collect();
        for a in burst {
            a.await.unwrap().unwrap();
        }
        h.flush().await.unwrap();
        let n = flushes.load(SeqCst);
        assert!((2..=52).contains(&n), "{n} flushes for 50 appends and a request");
    }
}
