//! One user's notice buffer: a broadcast channel that holds only what some
//! subscriber has not read yet, up to a capacity.
//!
//! `tokio::sync::broadcast` allocates its whole ring (capacity × a slot of a
//! `Notice`, about 45 KiB at the default 256) when the channel is made, and
//! the hub makes one per user with a stream or a poll — so a user with one
//! idle stream would cost three times the memory target of a stream. This
//! buffer starts empty, grows while subscribers are behind, and is freed
//! again once every subscriber has read everything. The interface is the
//! part of broadcast's that the hub, the stream and the polls use, with the
//! same errors: a subscriber more than `capacity` notices behind gets
//! `Lagged`, and `Closed` once the sender is gone.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::{RecvError, SendError};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::notice_log::Notice;

/// A notice as every subscriber of its user receives it: one copy shared by
/// all of them, and encoded as an SSE event once, by the first stream that
/// sends it — a notice to a user with 18,000 streams is cloned and encoded
/// once, not 18,000 times.
#[derive(Debug)]
pub struct LiveNotice {
    notice: Notice,
    event: OnceLock<Bytes>,
}

impl LiveNotice {
    pub fn new(notice: Notice) -> Self {
        Self {
            notice,
            event: OnceLock::new(),
        }
    }

    /// The notice as an event: `encode`d by the first caller, shared after.
    pub fn event(&self, encode: impl FnOnce(&Notice) -> Bytes) -> Bytes {
        self.event.get_or_init(|| encode(&self.notice)).clone()
    }
}

impl Deref for LiveNotice {
    type Target = Notice;

    fn deref(&self) -> &Notice {
        &self.notice
    }
}

/// The sending half, kept by the hub (one per user).
pub struct NoticeSender {
    shared: Arc<Shared>,
}

/// One subscriber's half: reads every notice sent after it subscribed.
pub struct NoticeReceiver {
    shared: Arc<Shared>,
    /// Position of the next notice this subscriber reads.
    next: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes waiting subscribers on a send and on close.
    sent: Notify,
    capacity: usize,
}

struct State {
    /// Notices some subscriber has not read yet, oldest first.
    slots: VecDeque<Slot>,
    /// Position of the next notice sent; the first slot's is `tail - slots.len()`.
    tail: u64,
    receivers: usize,
    closed: bool,
}

struct Slot {
    notice: Arc<LiveNotice>,
    /// Subscribers that have still to read it.
    unread: usize,
}

impl State {
    fn head(&self) -> u64 {
        self.tail - self.slots.len() as u64
    }

    /// Drops what everyone has read, and the allocation once nothing is left.
    fn release(&mut self) {
        while self.slots.front().is_some_and(|s| s.unread == 0) {
            self.slots.pop_front();
        }
        if self.slots.is_empty() && self.slots.capacity() > 0 {
            self.slots = VecDeque::new();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NoticeSender {
    /// A buffer holding at most `capacity` unread notices (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: VecDeque::new(),
                    tail: 0,
                    receivers: 0,
                    closed: false,
                }),
                sent: Notify::new(),
                capacity: capacity.max(1),
            }),
        }
    }

    /// A subscriber that gets every notice sent from now on.
    pub fn subscribe(&self) -> NoticeReceiver {
        let mut state = self.shared.lock();
        state.receivers += 1;
        NoticeReceiver {
            shared: self.shared.clone(),
            next: state.tail,
        }
    }

    pub fn receiver_count(&self) -> usize {
        self.shared.lock().receivers
    }

    /// Buffers `notice` for every subscriber; the oldest notice goes when the
    /// buffer is full (its laggards will hear `Lagged`). Fails when nobody
    /// subscribes (the notice is dropped: nobody would read it).
    pub fn send(&self, notice: Notice) -> Result<usize, SendError<()>> {
        let receivers = {
            let mut state = self.shared.lock();
            if state.receivers == 0 {
                return Err(SendError(()));
            }
            let unread = state.receivers;
            let notice = Arc::new(LiveNotice::new(notice));
            state.slots.push_back(Slot { notice, unread });
            state.tail += 1;
            if state.slots.len() > self.shared.capacity {
                state.slots.pop_front();
                state.release();
            }
            state.receivers
        };
        self.shared.sent.notify_waiters();
        Ok(receivers)
    }
}

impl Drop for NoticeSender {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.sent.notify_waiters();
    }
}

impl NoticeReceiver {
    fn try_recv(shared: &Shared, next: &mut u64) -> Option<Result<Arc<LiveNotice>, RecvError>> {
        let mut state = shared.lock();
        let head = state.head();
        if *next < head {
            let missed = head - *next;
            *next = head;
            return Some(Err(RecvError::Lagged(missed)));
        }
        if *next < state.tail {
            let slot = &mut state.slots[(*next - head) as usize];
            slot.unread -= 1;
            let notice = slot.notice.clone();
            *next += 1;
            state.release();
            return Some(Ok(notice));
        }
        state.closed.then_some(Err(RecvError::Closed))
    }

    /// The next notice, as `broadcast::Receiver::recv` would give it.
    pub async fn recv(&mut self) -> Result<Arc<LiveNotice>, RecvError> {
        loop {
            let sent = self.shared.sent.notified();
            tokio::pin!(sent);
            // Registered before looking, so a send in between wakes us.
            sent.as_mut().enable();
            if let Some(received) = Self::try_recv(&self.shared, &mut self.next) {
                return received;
            }
            sent.await;
        }
    }

    /// The notices as a stream, with `BroadcastStream`'s items; it ends when
    /// the sender is gone.
    pub fn into_stream(
        self,
    ) -> impl Stream<Item = Result<Arc<LiveNotice>, BroadcastStreamRecvError>> {
        futures::stream::unfold(self, |mut receiver| async move {
            match receiver.recv().await {
                Ok(notice) => Some((Ok(notice), receiver)),
                Err(RecvError::Lagged(n)) => {
                    Some((Err(BroadcastStreamRecvError::Lagged(n)), receiver))
                }
                Err(RecvError::Closed) => None,
            }
        })
    }
}

impl Drop for NoticeReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receivers -= 1;
        let head = state.head();
        let from = (self.next.max(head) - head) as usize;
        for slot in state.slots.iter_mut().skip(from) {
            slot.unread -= 1;
        }
        state.release();
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use uuid::Uuid;

    use super::*;

    fn notice(seq: i64) -> Notice {
        Notice {
            seq,
            user_id: Uuid::from_u128(1),
            user_seq: seq,
            chain: String::new(),
            order_id: Uuid::from_u128(seq as u128),
            order_version: 1,
            kind: "order-visible".to_owned(),
            status: "placed".to_owned(),
            error: None,
            visible_at: chrono::Utc::now(),
            committed_at: None,
        }
    }

    fn held(sender: &NoticeSender) -> (usize, usize) {
        let state = sender.shared.lock();
        (state.slots.len(), state.slots.capacity())
    }

    #[tokio::test]
    async fn every_subscriber_reads_every_notice_and_the_buffer_empties() {
        let sender = NoticeSender::new(256);
        assert_eq!(held(&sender), (0, 0), "nothing allocated up front");
        assert!(sender.send(notice(0)).is_err(), "nobody listens yet");
        let mut a = sender.subscribe();
        let mut b = sender.subscribe();
        for seq in 1..=3 {
            sender.send(notice(seq)).unwrap();
        }
        for seq in 1..=3 {
            assert_eq!(a.recv().await.unwrap().seq, seq);
        }
        assert_eq!(held(&sender).0, 3, "b has not read them yet");
        assert_eq!(b.recv().await.unwrap().seq, 1);
        drop(b);
        assert_eq!(held(&sender), (0, 0), "read by everyone: freed");
        // A waiting subscriber is woken by a send.
        let waiting = tokio::spawn(async move { a.recv().await.map(|n| n.seq) });
        tokio::task::yield_now().await;
        sender.send(notice(4)).unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), 4);
    }

    #[tokio::test]
    async fn a_notice_is_shared_by_its_subscribers_and_encoded_once() {
        let sender = NoticeSender::new(4);
        let mut subscribers: Vec<_> = (0..3).map(|_| sender.subscribe()).collect();
        sender.send(notice(1)).unwrap();
        let encoded = std::sync::atomic::AtomicUsize::new(0);
        let mut events = Vec::new();
        for subscriber in &mut subscribers {
            let live = subscriber.recv().await.unwrap();
            events.push(live.event(|n| {
                encoded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Bytes::from(format!("id: {}\n\n", n.seq))
            }));
        }
        assert_eq!(encoded.into_inner(), 1, "encoded by the first stream only");
        assert!(events.iter().all(|e| e == "id: 1\n\n"));
        // The same bytes, not copies.
        assert!(events.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()));
    }

    #[tokio::test]
    async fn a_subscriber_too_far_behind_lags_and_the_end_closes() {
        let sender = NoticeSender::new(2);
        let mut slow = sender.subscribe();
        for seq in 1..=5 {
            sender.send(notice(seq)).unwrap();
        }
        assert_eq!(held(&sender).0, 2, "never more than the capacity");
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(3))));
        assert_eq!(slow.recv().await.unwrap().seq, 4);
        let mut stream = Box::pin(slow.into_stream());
        assert_eq!(stream.next().await.unwrap().unwrap().seq, 5);
        drop(sender);
        assert!(stream.next().await.is_none(), "closed with the sender");
    }
}
