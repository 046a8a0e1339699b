//! Shutdown, signalled once and observed by every long-lived task.
//!
//! A `watch` channel rather than a broadcast: a task (or an SSE stream) that
//! starts listening after the signal was given still sees it at once.

use tokio::sync::watch;

/// The sending half, held by the application.
#[derive(Clone)]
pub struct ShutdownSignal(watch::Sender<bool>);

/// The receiving half, one per task.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl ShutdownSignal {
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Default for ShutdownSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// Resolves once shutdown has been signalled (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the sender is gone: that is a shutdown too.
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }
}
