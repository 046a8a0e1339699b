//! The long-lived tasks under watch: none of them may end while the server
//! runs.
//!
//! The relay, the projectors' consumer, the notice hub, the relay's waker,
//! the lag monitor and the bus watch each loop until shutdown is signalled.
//! One that returns or panics before that has stopped part of the promise
//! (notices stop, or the backlog grows) while the web goes on answering. So
//! [`Tasks`] runs each under its name and reports the first that ends early;
//! startup then logs it, marks this instance unready ([`TaskHealth`], read
//! by `/readyz`), stops the server and exits non-zero, so that an
//! orchestrator replaces the process instead of routing users to it.
//!
//! [`TaskFaults`] is the seam for tests: it makes a named task panic, as a
//! bug would. In production nothing ever asks it, and each task pays one
//! idle `watch` receiver.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::shutdown::Shutdown;

/// A task that ended while the server was running, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadTask {
    /// The task's name (`relay`, `notice hub`, …).
    pub name: &'static str,
    /// Its panic message, or that it returned without being asked to stop.
    pub error: String,
}

/// Whether every task is still running (for `/readyz`).
#[derive(Default)]
pub struct TaskHealth {
    dead: Mutex<Option<DeadTask>>,
}

impl TaskHealth {
    /// The first task that ended early, if one did.
    pub fn dead(&self) -> Option<DeadTask> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps the first death: it is the cause, later ones its consequences.
    fn record(&self, dead: &DeadTask) {
        let mut slot = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(dead.clone());
        }
    }
}

/// Makes a named task panic (tests only; see the module comment).
pub struct TaskFaults(watch::Sender<Option<&'static str>>);

impl Default for TaskFaults {
    fn default() -> Self {
        Self(watch::channel(None).0)
    }
}

impl TaskFaults {
    /// The task called `name` panics at once, wherever it is waiting.
    pub fn panic(&self, name: &'static str) {
        self.0.send_replace(Some(name));
    }
}

/// The tasks startup spawned, each under its name.
pub struct Tasks {
    set: JoinSet<(&'static str, Result<(), String>)>,
    faults: Arc<TaskFaults>,
}

impl Tasks {
    pub fn new(faults: Arc<TaskFaults>) -> Self {
        Self {
            set: JoinSet::new(),
            faults,
        }
    }

    /// Runs `task` under `name`. A panic is caught here and reported as
    /// this task's death, not lost in a `JoinError` without a name.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let mut fault = self.faults.0.subscribe();
        let task = async move {
            tokio::select! {
                () = task => {}
                _ = fault.wait_for(|asked| *asked == Some(name)) => {
                    panic!("made to panic through the test hook (supervision::TaskFaults)")
                }
            }
        };
        self.set.spawn(async move {
            let outcome = AssertUnwindSafe(task)
                .catch_unwind()
                .await
                .map_err(|panic| panic_message(panic.as_ref()));
            (name, outcome)
        });
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Resolves when the first task ends before `shutdown` was signalled
    /// (never, if none does): each task loops until then, so such an end is
    /// a death. Ends after the signal are the tasks obeying it.
    pub async fn first_death(&mut self, health: &TaskHealth, shutdown: &Shutdown) -> DeadTask {
        let joined = self.set.join_next().await;
        if shutdown.is_shutdown() {
            return std::future::pending().await;
        }
        let dead = match joined {
            Some(Ok((name, Ok(())))) => DeadTask {
                name,
                error: "it returned without being asked to stop".to_owned(),
            },
            Some(Ok((name, Err(panic)))) => DeadTask {
                name,
                error: format!("it panicked: {panic}"),
            },
            // Only an abort gets here, and nothing aborts these tasks.
            Some(Err(e)) => DeadTask {
                name: "unknown",
                error: e.to_string(),
            },
            None => std::future::pending().await,
        };
        health.record(&dead);
        dead
    }

    /// After shutdown was signalled: waits for every task still running.
    pub async fn join_all(mut self) {
        while let Some(joined) = self.set.join_next().await {
            if let Ok((name, Err(panic))) = joined {
                tracing::error!(task = name, %panic, "background task panicked while stopping");
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::ShutdownSignal;

    #[tokio::test]
    async fn tasks_that_end_after_the_signal_are_not_deaths() {
        let health = TaskHealth::default();
        let stop = ShutdownSignal::new();
        let mut tasks = Tasks::new(Arc::default());
        let mut shutdown = stop.subscribe();
        tasks.spawn("obedient", async move { shutdown.recv().await });
        stop.trigger();
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tasks.first_death(&health, &stop.subscribe()),
        )
        .await;
        assert!(waited.is_err(), "an obedient task was reported dead");
        assert_eq!(health.dead(), None);
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_by_name_and_recorded() {
        let faults = Arc::new(TaskFaults::default());
        let health = TaskHealth::default();
        let running = ShutdownSignal::new();
        let mut tasks = Tasks::new(faults.clone());
        tasks.spawn("steady", std::future::pending());
        tasks.spawn("doomed", std::future::pending());
        assert_eq!(health.dead(), None);
        faults.panic("doomed");
        let dead = tasks.first_death(&health, &running.subscribe()).await;
        assert_eq!(dead.name, "doomed");
        assert!(dead.error.contains("panicked"), "{}", dead.error);
        assert_eq!(health.dead(), Some(dead));
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_a_death_too() {
        let health = TaskHealth::default();
        let running = ShutdownSignal::new();
        let mut tasks = Tasks::new(Arc::default());
        tasks.spawn("quitter", async {});
        let dead = tasks.first_death(&health, &running.subscribe()).await;
        assert_eq!(dead.name, "quitter");
        assert!(dead.error.contains("returned"), "{}", dead.error);
    }

    #[tokio::test]
    async fn a_real_panic_keeps_its_message() {
        let health = TaskHealth::default();
        let running = ShutdownSignal::new();
        let mut tasks = Tasks::new(Arc::default());
        tasks.spawn("buggy", async { panic!("index out of range") });
        let dead = tasks.first_death(&health, &running.subscribe()).await;
        assert!(dead.error.contains("index out of range"), "{}", dead.error);
    }
}
