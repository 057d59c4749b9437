//! Coarse deadlines for the request path: one list per serving thread, kept by that thread,
//! instead of a timer-wheel entry per request. Registering a Tokio timer and removing it again
//! cost about 1,100 instructions per proxied request (`benches/callgrind`, with and without the
//! default request timeout); a slot in this list costs a fraction of that.
//!
//! The thread's [`tick`] loop sleeps until the earliest deadline (deadlines are rounded up to
//! [`TICK`], so a deadline fires up to that late), fires what has expired and sleeps again;
//! with nothing waiting it sleeps until a deadline is registered. Deadlines mostly arrive in
//! increasing order (each request's is later than those before), so a registration rarely
//! wakes the loop.
//!
//! On a thread that runs no [`tick`] loop (anything but a serving thread) a deadline falls back
//! to a Tokio timer.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How late a deadline may fire.
pub const TICK: Duration = Duration::from_millis(10);

thread_local! {
    /// This thread's deadlines, while its [`tick`] loop runs.
    static LIST: RefCell<Option<List>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct List {
    /// Tells this list from an earlier one on the same thread: a slot index is only valid in
    /// the list that gave it out.
    generation: u64,
    slots: Vec<Slot>,
    /// Indices of free slots.
    free: Vec<usize>,
    /// No waiting deadline is earlier than this (one may have been dropped since).
    next: Option<Instant>,
    /// When the tick loop will look next; `None` while it waits for a first deadline.
    armed: Option<Instant>,
    /// The tick loop, to be woken when a deadline earlier than `armed` is registered.
    ticker: Option<Waker>,
}

enum Slot {
    Free,
    Waiting { at: Instant, waker: Waker },
    Fired,
}

impl List {
    fn register(&mut self, at: Instant, waker: Waker) -> usize {
        let entry = Slot::Waiting { at, waker };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i] = entry;
                i
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        };
        if self.next.is_none_or(|next| at < next) {
            self.next = Some(at);
            if self.armed.is_none_or(|armed| at + TICK < armed)
                && let Some(ticker) = self.ticker.take()
            {
                ticker.wake();
            }
        }
        index
    }

    /// Wakes the deadlines due at `now` and works out the next one.
    fn fire_expired(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        for slot in &mut self.slots {
            match slot {
                Slot::Waiting { at, .. } if *at <= now => {
                    if let Slot::Waiting { waker, .. } = std::mem::replace(slot, Slot::Fired) {
                        waker.wake();
                    }
                }
                Slot::Waiting { at, .. } => next = Some(next.map_or(*at, |n| n.min(*at))),
                Slot::Free | Slot::Fired => {}
            }
        }
        self.next = next;
    }
}

/// Resolves at `at` (or up to [`TICK`] after).
pub struct Deadline {
    at: Instant,
    state: State,
}

enum State {
    New,
    /// Registered in this thread's list: (generation, index).
    Slot(u64, usize),
    /// No list on this thread.
    Timer(Pin<Box<Sleep>>),
}

impl Deadline {
    pub fn new(at: Instant) -> Deadline {
        Deadline {
            at,
            state: State::New,
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &mut this.state {
            State::Timer(sleep) => return sleep.as_mut().poll(cx),
            State::Slot(generation, index) => {
                let (generation, index) = (*generation, *index);
                let fired = LIST.with(|list| match list.borrow_mut().as_mut() {
                    Some(list) if list.generation == generation => match &mut list.slots[index] {
                        Slot::Waiting { waker, .. } => {
                            if !waker.will_wake(cx.waker()) {
                                *waker = cx.waker().clone();
                            }
                            Some(false)
                        }
                        Slot::Fired | Slot::Free => Some(true),
                    },
                    // The loop has stopped (the thread is shutting down).
                    _ => None,
                });
                match fired {
                    Some(true) => return Poll::Ready(()),
                    Some(false) => return Poll::Pending,
                    None => {
                        let mut sleep = Box::pin(tokio::time::sleep_until(this.at));
                        let polled = sleep.as_mut().poll(cx);
                        this.state = State::Timer(sleep);
                        return polled;
                    }
                }
            }
            State::New => {}
        }
        let at = this.at;
        let slot = LIST.with(|list| {
            let mut list = list.borrow_mut();
            let list = list.as_mut()?;
            Some((list.generation, list.register(at, cx.waker().clone())))
        });
        match slot {
            Some((generation, index)) => {
                this.state = State::Slot(generation, index);
                Poll::Pending
            }
            None => {
                let mut sleep = Box::pin(tokio::time::sleep_until(at));
                let polled = sleep.as_mut().poll(cx);
                this.state = State::Timer(sleep);
                polled
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let State::Slot(generation, index) = self.state {
            // `try_with`: the thread's locals may already be gone when it exits.
            let _ = LIST.try_with(|list| {
                if let Some(list) = list.borrow_mut().as_mut()
                    && list.generation == generation
                {
                    list.slots[index] = Slot::Free;
                    list.free.push(index);
                }
            });
        }
    }
}

/// Runs `future` until `at`: `None` if the deadline came first.
pub fn within<F: Future>(at: Instant, future: F) -> Within<F> {
    Within {
        future,
        deadline: Deadline::new(at),
    }
}

pin_project_lite::pin_project! {
    /// See [`within`]. A struct rather than an `async fn`, so that the (large) future it runs
    /// is moved once less per request.
    pub struct Within<F> {
        #[pin]
        future: F,
        deadline: Deadline,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        match Pin::new(this.deadline).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// hyper's timer for HTTP/1 connections on the serving threads: the header read timeout, one
/// per request, becomes a slot in the thread's list too.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListTimer;

impl hyper::rt::Timer for ListTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline::new(Instant::now() + duration))
    }

    fn sleep_until(&self, at: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline::new(Instant::from_std(at)))
    }
}

impl hyper::rt::Sleep for Deadline {}

/// Keeps this thread's deadlines: sleeps until the earliest is due, fires what has expired,
/// and so on. Runs until dropped; deadlines waiting then fall back to Tokio timers.
pub async fn tick() {
    struct Installed;
    impl Drop for Installed {
        fn drop(&mut self) {
            let _ = LIST.try_with(|list| {
                if let Some(list) = list.borrow_mut().take() {
                    for slot in list.slots {
                        if let Slot::Waiting { waker, .. } = slot {
                            waker.wake();
                        }
                    }
                }
            });
        }
    }
    thread_local! {
        static GENERATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let generation = GENERATIONS.with(|g| {
        g.set(g.get() + 1);
        g.get()
    });
    LIST.with(|list| {
        *list.borrow_mut() = Some(List {
            generation,
            ..List::default()
        })
    });
    let _installed = Installed;
    let mut sleep = Box::pin(tokio::time::sleep(TICK));
    let mut sleeping = false;
    std::future::poll_fn(|cx| {
        LIST.with(|list| {
            let mut list = list.borrow_mut();
            let list = list.as_mut().expect("installed above");
            loop {
                if sleeping && sleep.as_mut().poll(cx).is_ready() {
                    sleeping = false;
                    list.armed = None;
                    list.fire_expired(Instant::now());
                }
                let Some(next) = list.next else {
                    // Nothing waits: until a deadline is registered.
                    sleeping = false;
                    list.armed = None;
                    list.ticker = Some(cx.waker().clone());
                    return Poll::Pending;
                };
                // A tick after it, so that deadlines close together fire together.
                let target = Instant::now().max(next) + TICK;
                if !sleeping || list.armed.is_some_and(|armed| armed > target) {
                    sleep.as_mut().reset(target);
                    sleeping = true;
                    list.armed = Some(target);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    continue;
                }
                list.ticker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `test` on this thread with its tick loop running, as on a serving thread.
    async fn with_tick_loop<F: Future>(test: F) -> F::Output {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let ticker = tokio::task::spawn_local(tick());
                tokio::task::yield_now().await;
                let output = test.await;
                ticker.abort();
                output
            })
            .await
    }

    /// Looks at this thread's list.
    fn inspect<R>(look: impl FnOnce(&List) -> R) -> R {
        LIST.with(|list| look(list.borrow().as_ref().expect("a tick loop runs")))
    }

    #[tokio::test]
    async fn without_a_tick_loop_a_deadline_is_a_timer() {
        let start = Instant::now();
        assert_eq!(
            within(
                start + Duration::from_millis(30),
                std::future::pending::<()>()
            )
            .await,
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(
            within(start + Duration::from_secs(5), async { 7 }).await,
            Some(7)
        );
    }

    #[tokio::test]
    async fn a_deadline_outlives_its_list_and_leaves_the_next_alone() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let first = tokio::task::spawn_local(tick());
                tokio::task::yield_now().await;
                let start = Instant::now();
                let mut old = Box::pin(Deadline::new(start + Duration::from_millis(40)));
                assert!(futures_util::poll!(old.as_mut()).is_pending());
                first.abort();
                let _ = first.await;
                let second = tokio::task::spawn_local(tick());
                tokio::task::yield_now().await;
                let mut new = Box::pin(Deadline::new(start + Duration::from_secs(60)));
                assert!(futures_util::poll!(new.as_mut()).is_pending());
                // The old deadline now runs on a Tokio timer; dropping it frees nothing here.
                old.await;
                assert!(start.elapsed() >= Duration::from_millis(40));
                inspect(|list| {
                    assert!(
                        matches!(list.slots[0], Slot::Waiting { .. }),
                        "the new one waits"
                    );
                    assert!(list.free.is_empty());
                });
                drop(new);
                second.abort();
            })
            .await;
    }

    #[tokio::test]
    async fn hypers_timer_sleeps_on_the_list() {
        use hyper::rt::Timer as _;
        with_tick_loop(async {
            let start = Instant::now();
            ListTimer.sleep(Duration::from_millis(30)).await;
            ListTimer
                .sleep_until(std::time::Instant::now() + Duration::from_millis(20))
                .await;
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(50), "{took:?}");
            inspect(|list| {
                assert_eq!(list.slots.len(), 1, "the second sleep reused the slot");
                assert_eq!(list.free.len(), 1);
            });
        })
        .await;
    }

    #[tokio::test]
    async fn deadlines_fire_within_a_tick_and_finished_work_frees_its_slot() {
        with_tick_loop(async {
            let start = Instant::now();
            let mut waits = Vec::new();
            // The second is earlier than the first: the loop must re-arm for it.
            for ms in [300u64, 20, 80] {
                waits.push(tokio::task::spawn_local(async move {
                    within(
                        start + Duration::from_millis(ms),
                        std::future::pending::<()>(),
                    )
                    .await;
                    start.elapsed()
                }));
            }
            // Work that finishes in time gives its slot back.
            for _ in 0..100 {
                let work = async {
                    tokio::task::yield_now().await;
                    1
                };
                assert_eq!(within(start + Duration::from_secs(60), work).await, Some(1));
            }
            for (wait, ms) in waits.into_iter().zip([300u64, 20, 80]) {
                let took = wait.await.unwrap();
                assert!(took >= Duration::from_millis(ms), "{took:?} < {ms} ms");
                // Generous: the machine may be busy.
                assert!(took < Duration::from_millis(ms) + 20 * TICK, "{took:?}");
            }
            inspect(|list| {
                assert!(
                    !list.slots.iter().any(|s| matches!(s, Slot::Waiting { .. })),
                    "nothing waits"
                );
                assert_eq!(
                    list.free.len(),
                    list.slots.len(),
                    "every slot is free again"
                );
                assert!(list.slots.len() <= 4, "{} slots", list.slots.len());
            });
        })
        .await;
    }
}
