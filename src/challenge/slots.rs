//! Connection slots for the servers that strangers connect to (the http-01 listener, the
//! tls-alpn-01 responder and the redirector): a cap on open connections that a flood of idle
//! connections cannot use to turn real clients away.
//!
//! Each server caps its connections (descriptors and memory are finite) and gives a client a
//! few seconds to send its request. Before, a connection over the cap was closed at once, so
//! ten thousand clients that connect and send nothing kept a server full and every real
//! client was reset until their deadlines ran out (up to 10 s at the redirector). Now a new
//! connection takes the slot of the oldest connection that has not sent its request yet
//! (which is closed), and only when every slot is busy answering a request is the new one
//! closed. A real client sends its request within a round trip, so to push it out a flood
//! would have to open as many connections as there are slots within that round trip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// The connection slots of one server (shared by its listening sockets).
#[derive(Debug)]
pub struct Slots {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Number given to the next connection (so the oldest idle one is the first key).
    next: u64,
    /// Connections that have not sent their request yet, oldest first, with the sender
    /// that closes each.
    idle: BTreeMap<u64, oneshot::Sender<()>>,
    /// Connections answering a request.
    busy: usize,
}

/// One connection's slot; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    busy: AtomicBool,
}

/// Completes when the connection has lost its slot to a newer one and must close.
#[derive(Debug)]
pub struct Evicted(oneshot::Receiver<()>);

impl Evicted {
    /// Waits until the slot is taken away; never completes once the connection is busy.
    pub async fn wait(self) {
        if self.0.await.is_err() {
            // The sender went because the connection became busy (or the slot was freed).
            std::future::pending::<()>().await;
        }
    }
}

impl Slots {
    /// Room for `cap` connections (at least one).
    pub fn new(cap: usize) -> Arc<Slots> {
        Arc::new(Slots {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection, as an idle one: when all are taken the oldest idle
    /// connection is told to close ([`Evicted`]) and its slot given to this one; `None` when
    /// every slot is busy answering a request.
    pub fn admit(self: &Arc<Self>) -> Option<(Arc<Slot>, Evicted)> {
        let mut inner = self.lock();
        if inner.idle.len() + inner.busy >= self.cap {
            let (_, close) = inner.idle.pop_first()?;
            // The receiver may be gone already (its connection is ending): fine either way.
            let _ = close.send(());
        }
        let id = inner.next;
        inner.next += 1;
        let (close, evicted) = oneshot::channel();
        inner.idle.insert(id, close);
        drop(inner);
        let slot = Slot {
            slots: self.clone(),
            id,
            busy: AtomicBool::new(false),
        };
        Some((Arc::new(slot), Evicted(evicted)))
    }

    /// Whether no connection holds a slot.
    pub fn is_empty(&self) -> bool {
        let inner = self.lock();
        inner.idle.is_empty() && inner.busy == 0
    }

    /// (idle, busy) connections.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.idle.len(), inner.busy)
    }
}

impl Slot {
    /// The connection has sent its request and is being answered: it can no longer be
    /// evicted. Idempotent.
    pub fn busy(&self) {
        let mut inner = self.slots.lock();
        if inner.idle.remove(&self.id).is_some() {
            inner.busy += 1;
            self.busy.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        if self.busy.load(Ordering::Relaxed) {
            inner.busy = inner.busy.saturating_sub(1);
        } else {
            inner.idle.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn evicted_soon(e: Evicted) -> bool {
        tokio::time::timeout(Duration::from_millis(50), e.wait())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_oldest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let slots = Slots::new(2);
        let (a, a_out) = slots.admit().expect("room");
        let (b, b_out) = slots.admit().expect("room");
        assert_eq!(slots.counts(), (2, 0));
        // Full of idle connections: the oldest (a) goes.
        let (c, c_out) = slots.admit().expect("evicts a");
        assert!(evicted_soon(a_out).await);
        drop(a);
        assert_eq!(slots.counts(), (2, 0));
        // Busy ones are never evicted.
        b.busy();
        c.busy();
        assert_eq!(slots.counts(), (0, 2));
        assert!(slots.admit().is_none(), "every slot busy");
        assert!(!evicted_soon(b_out).await);
        assert!(!evicted_soon(c_out).await);
        // Freed slots are reused.
        drop(b);
        let (d, _d_out) = slots.admit().expect("room again");
        assert_eq!(slots.counts(), (1, 1));
        drop((c, d));
        assert_eq!(slots.counts(), (0, 0));
    }
}
