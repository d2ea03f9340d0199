//! A connection's delivery queue: bounded, with many senders (the routing index, publishers
//! waiting for room) and one receiver (the connection), that holds memory only while it holds
//! deliveries, and carries the flag that says it overflowed.
//!
//! Why not a ready-made channel (issue 22: memory per idle connection). tokio's bounded `mpsc`
//! allocates its channel state (padded to cache lines) and a first block of 32 slots when it is
//! created, and keeps a block once it has one: about 650 bytes for every connection, idle or
//! not. `async-channel`'s bounded queue is a ring of `capacity` slots allocated at once (10,000
//! by default here). `flume` grows lazily but never gives its buffer back after a burst, and
//! allocates a hook each time a receiver waits. Here the slots are a `VecDeque` that grows as
//! deliveries arrive and is let go whenever the receiver empties it; the bound is a tokio
//! [`Semaphore`], which allocates nothing and hands room to waiting senders first come, first
//! served, as tokio's bounded channel does (it is built on the same semaphore).
//!
//! The overflow flag replaces a cancellation token per connection: whoever finds the queue full
//! and will not wait (see `fanout`) raises it, and the connection ends itself.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::{Semaphore, TryAcquireError};

/// A queue of at most `capacity` items (at least 1).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        room: Semaphore::new(capacity),
        senders: AtomicUsize::new(1),
        state: Mutex::new(State {
            items: VecDeque::new(),
            receiving: true,
            overflowed: false,
            item_waker: None,
            overflow_waker: None,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    /// One permit per free slot: taken by a sender before it pushes, given back by the receiver
    /// when it pops. Closed when the receiver is gone.
    room: Semaphore,
    senders: AtomicUsize,
    state: Mutex<State<T>>,
}

struct State<T> {
    items: VecDeque<T>,
    /// False once the receiver is dropped: what is sent after is dropped at once.
    receiving: bool,
    overflowed: bool,
    item_waker: Option<Waker>,
    overflow_waker: Option<Waker>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section leaves the state consistent (a push, a pop, a flag), so a
        // poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an item whose slot is already taken.
    fn push(&self, item: T) {
        let mut state = self.lock();
        if !state.receiving {
            return;
        }
        state.items.push_back(item);
        let waker = state.item_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Why `try_send` did not queue an item; the item comes back.
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    /// Every slot is taken.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// Why `try_recv` returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    /// Nothing is queued now.
    Empty,
    /// Nothing is queued, and every sender is gone.
    Disconnected,
}

/// The receiver is gone.
#[derive(Debug)]
pub(crate) struct Closed;

pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last one: a receiver waiting for an item learns that none will come.
            let waker = self.shared.lock().item_waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` if there is room, without waiting.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        match self.shared.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.shared.push(item);
                Ok(())
            }
            Err(TryAcquireError::NoPermits) => Err(TrySendError::Full(item)),
            Err(TryAcquireError::Closed) => Err(TrySendError::Closed(item)),
        }
    }

    /// Queues `item` once there is room; gives it back if the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        match self.reserve().await {
            Ok(permit) => {
                permit.send(item);
                Ok(())
            }
            Err(Closed) => Err(item),
        }
    }

    /// Waits for room for one item, and keeps it until the permit is used or dropped.
    pub async fn reserve(&self) -> Result<Permit<'_, T>, Closed> {
        let permit = self.shared.room.acquire().await.map_err(|_| Closed)?;
        permit.forget();
        Ok(Permit { sender: self })
    }

    /// Flags the queue as overflowed: its receiver is told (`Receiver::overflowed`).
    pub fn overflow(&self) {
        let mut state = self.shared.lock();
        state.overflowed = true;
        let waker = state.overflow_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the queue is flagged as overflowed.
    #[cfg(test)]
    pub fn is_overflowed(&self) -> bool {
        self.shared.lock().overflowed
    }

    /// Lowers the overflow flag; whether it was raised.
    pub fn take_overflow(&self) -> bool {
        std::mem::take(&mut self.shared.lock().overflowed)
    }
}

/// Room for one item in a queue, taken by [`Sender::reserve`].
pub(crate) struct Permit<'a, T> {
    sender: &'a Sender<T>,
}

impl<T> Permit<'_, T> {
    /// Queues `item` in the room this permit holds.
    pub fn send(self, item: T) {
        self.sender.shared.push(item);
        // The slot now belongs to the item: the receiver gives it back when it takes the item.
        std::mem::forget(self);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        self.sender.shared.room.add_permits(1);
    }
}

pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item; `None` once nothing is queued and every sender is gone. To be polled
    /// only by the task that owns the receiver (one waker is kept).
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        match self.take(&mut state) {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                if !state
                    .item_waker
                    .as_ref()
                    .is_some_and(|waker| waker.will_wake(cx.waker()))
                {
                    state.item_waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// The next item, without waiting.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut state = self.shared.lock();
        self.take(&mut state)
    }

    fn take(&self, state: &mut State<T>) -> Result<T, TryRecvError> {
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() {
                    // An empty queue holds no memory: an idle connection pays for no slots.
                    state.items = VecDeque::new();
                }
                self.shared.room.add_permits(1);
                Ok(item)
            }
            // Read after the queue is found empty: a sender's last push happened before its
            // count went down.
            None if self.shared.senders.load(Ordering::Acquire) == 0 => {
                Err(TryRecvError::Disconnected)
            }
            None => Err(TryRecvError::Empty),
        }
    }

    /// Resolves once the queue is flagged as overflowed (at once if it is). Polled only by the
    /// task that owns the receiver.
    pub async fn overflowed(&self) {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.overflowed {
                return Poll::Ready(());
            }
            if !state
                .overflow_waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                state.overflow_waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Senders waiting for room, and those that come later, are told it is gone.
        self.shared.room.close();
        let items = {
            let mut state = self.shared.lock();
            state.receiving = false;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: an item's drop may do anything.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn capacity_of(receiver: &Receiver<u32>) -> usize {
        receiver.shared.lock().items.capacity()
    }

    #[test]
    fn holds_no_memory_until_used_and_lets_it_go_once_drained() {
        let (tx, rx) = channel::<u32>(10_000);
        assert_eq!(capacity_of(&rx), 0, "nothing allocated for an unused queue");
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        assert!(capacity_of(&rx) >= 100);
        for i in 0..100 {
            assert_eq!(rx.try_recv(), Ok(i), "in order");
        }
        assert_eq!(capacity_of(&rx), 0, "an emptied queue lets its slots go");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn full_then_room_again_as_the_receiver_takes() {
        let (tx, rx) = channel(2);
        assert!(tx.try_send(1).is_ok());
        assert!(tx.try_send(2).is_ok());
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(tx.try_send(3).is_ok());
        assert_eq!(rx.len(), 2);
        drop(rx);
        assert!(matches!(tx.try_send(4), Err(TrySendError::Closed(4))));
    }

    #[test]
    fn a_dropped_permit_gives_its_room_back() {
        let (tx, rx) = channel::<u32>(1);
        let permit = futures_util::FutureExt::now_or_never(tx.reserve())
            .expect("room")
            .expect("open");
        assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
        drop(permit);
        assert!(tx.try_send(1).is_ok());
        assert_eq!(rx.try_recv(), Ok(1));
    }

    #[test]
    fn the_receiver_learns_when_every_sender_is_gone() {
        let (tx, rx) = channel(4);
        let other = tx.clone();
        tx.try_send(7).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(7));
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Empty),
            "one sender is left"
        );
        drop(other);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_and_a_waiting_receiver_gets_the_item() {
        let (tx, rx) = channel(1);
        tx.try_send(1).unwrap();
        let sender = tokio::spawn(async move {
            tx.send(2).await.expect("receiver alive");
            tx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(rx.len(), 1, "the second waits for room");
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        drop(sender.await.unwrap());
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_sender_is_told_when_the_receiver_goes() {
        let (tx, rx) = channel(1);
        tx.try_send(1).unwrap();
        let sender = tokio::spawn(async move { tx.send(2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        assert_eq!(sender.await.unwrap(), Err(2));
    }

    #[tokio::test]
    async fn overflow_wakes_the_receiver_and_can_be_lowered() {
        let (tx, rx) = channel::<u32>(1);
        let flagger = tx.clone();
        let waiting = tokio::spawn(async move {
            rx.overflowed().await;
            rx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!tx.is_overflowed());
        flagger.overflow();
        let rx = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert!(tx.take_overflow());
        assert!(!tx.is_overflowed());
        assert!(
            futures_util::FutureExt::now_or_never(rx.overflowed()).is_none(),
            "lowered"
        );
    }
}
