//! Coarse deadlines for the request path: one list per serving thread, checked every [`TICK`]
//! by that thread, instead of a timer-wheel entry per request. Registering a Tokio timer and
//! removing it again cost about 1,100 instructions per proxied request (`benches/callgrind`,
//! with and without the default request timeout); a slot in this list costs a tenth of that.
//! A deadline fires up to [`TICK`] late.
//!
//! On a thread that runs no [`tick`] loop (anything but a serving thread) a deadline falls back
//! to a Tokio timer.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How often a serving thread looks for expired deadlines while any is waiting.
pub const TICK: Duration = Duration::from_millis(10);

thread_local! {
    /// This thread's deadlines, while its [`tick`] loop runs.
    static LIST: RefCell<Option<List>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct List {
    slots: Vec<Slot>,
    /// Indices of free slots.
    free: Vec<usize>,
    /// Slots in [`Slot::Waiting`].
    waiting: usize,
    /// The tick loop, parked while nothing waits.
    ticker: Option<Waker>,
}

enum Slot {
    Free,
    Waiting { at: Instant, waker: Waker },
    Fired,
}

impl List {
    fn fire_expired(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if let Slot::Waiting { at, .. } = slot
                && *at <= now
                && let Slot::Waiting { waker, .. } = std::mem::replace(slot, Slot::Fired)
            {
                self.waiting -= 1;
                waker.wake();
            }
        }
    }
}

/// Resolves at `at` (or up to [`TICK`] after).
pub struct Deadline {
    at: Instant,
    state: State,
}

enum State {
    New,
    /// Registered in this thread's list.
    Slot(usize),
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
            State::Slot(index) => {
                let index = *index;
                let fired = LIST.with(|list| match list.borrow_mut().as_mut() {
                    Some(list) => match &mut list.slots[index] {
                        Slot::Waiting { waker, .. } => {
                            if !waker.will_wake(cx.waker()) {
                                *waker = cx.waker().clone();
                            }
                            Some(false)
                        }
                        Slot::Fired | Slot::Free => Some(true),
                    },
                    // The loop has stopped (the thread is shutting down).
                    None => None,
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
            let entry = Slot::Waiting {
                at,
                waker: cx.waker().clone(),
            };
            let index = match list.free.pop() {
                Some(i) => {
                    list.slots[i] = entry;
                    i
                }
                None => {
                    list.slots.push(entry);
                    list.slots.len() - 1
                }
            };
            list.waiting += 1;
            if list.waiting == 1
                && let Some(ticker) = list.ticker.take()
            {
                ticker.wake();
            }
            Some(index)
        });
        match slot {
            Some(index) => {
                this.state = State::Slot(index);
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
        if let State::Slot(index) = self.state {
            // `try_with`: the thread's locals may already be gone when it exits.
            let _ = LIST.try_with(|list| {
                if let Some(list) = list.borrow_mut().as_mut() {
                    if let Slot::Waiting { .. } = list.slots[index] {
                        list.waiting -= 1;
                    }
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

/// Keeps this thread's deadlines: fires expired ones every [`TICK`] while any waits, and
/// sleeps otherwise. Runs until dropped; deadlines registered meanwhile then fire at once.
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
    LIST.with(|list| *list.borrow_mut() = Some(List::default()));
    let _installed = Installed;
    loop {
        // Parked until a deadline is registered.
        std::future::poll_fn(|cx| {
            LIST.with(|list| {
                let mut list = list.borrow_mut();
                let list = list.as_mut().expect("installed above");
                if list.waiting > 0 {
                    Poll::Ready(())
                } else {
                    list.ticker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        LIST.with(|list| {
            if let Some(list) = list.borrow_mut().as_mut() {
                list.fire_expired(now);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn hypers_timer_sleeps_on_the_list() {
        use hyper::rt::Timer as _;
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let ticker = tokio::task::spawn_local(tick());
                tokio::task::yield_now().await;
                let start = Instant::now();
                ListTimer.sleep(Duration::from_millis(30)).await;
                ListTimer
                    .sleep_until(std::time::Instant::now() + Duration::from_millis(20))
                    .await;
                let took = start.elapsed();
                assert!(took >= Duration::from_millis(50), "{took:?}");
                LIST.with(|list| {
                    let list = list.borrow();
                    let list = list.as_ref().unwrap();
                    assert_eq!(list.slots.len(), 1, "the second sleep reused the slot");
                    assert_eq!(list.free.len(), 1);
                });
                ticker.abort();
            })
            .await;
    }

    #[tokio::test]
    async fn deadlines_fire_within_a_tick_and_finished_work_frees_its_slot() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let ticker = tokio::task::spawn_local(tick());
                tokio::task::yield_now().await;
                let start = Instant::now();
                let mut waits = Vec::new();
                for ms in [50u64, 20, 80] {
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
                for (wait, ms) in waits.into_iter().zip([50u64, 20, 80]) {
                    let took = wait.await.unwrap();
                    assert!(took >= Duration::from_millis(ms), "{took:?} < {ms} ms");
                    // Generous: the machine may be busy.
                    assert!(took < Duration::from_millis(ms) + 20 * TICK, "{took:?}");
                }
                LIST.with(|list| {
                    let list = list.borrow();
                    let list = list.as_ref().unwrap();
                    assert_eq!(list.waiting, 0);
                    assert_eq!(
                        list.free.len(),
                        list.slots.len(),
                        "every slot is free again"
                    );
                    assert!(list.slots.len() <= 4, "{} slots", list.slots.len());
                });
                ticker.abort();
            })
            .await;
    }
}
