//! Stopping and starting the real services through `scripts/services`.

use std::process::Command;

use tokio::sync::{Mutex, MutexGuard};

/// The script of this checkout (found relative to the crate, so CI and
/// worktrees manage their own instances).
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services");

#[derive(Clone, Copy, Debug)]
pub enum Service {
    Postgres,
    Elasticsearch,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Elasticsearch => "elasticsearch",
        }
    }
}

static LOCK: Mutex<()> = Mutex::const_new(());

/// Held for a whole test: the tests of this binary run one at a time.
pub struct Serial {
    _guard: MutexGuard<'static, ()>,
}

/// Waits for the other fault tests to finish, then makes sure both services
/// run (an earlier test may have died while one was down).
pub async fn serial() -> Serial {
    let guard = LOCK.lock().await;
    run("start", None).await;
    Serial { _guard: guard }
}

/// A service stopped by the test. Dropping it starts the service again
/// (blocking), so a failing test leaves the services running; `end` does
/// the same from async code.
#[must_use = "the service starts again when this is dropped"]
pub struct Outage {
    service: Service,
    ended: bool,
}

/// Stops `service` (`scripts/services stop <service>`).
pub async fn stop(service: Service) -> Outage {
    run("stop", Some(service)).await;
    Outage {
        service,
        ended: false,
    }
}

impl Outage {
    /// Starts the service again; returns once it answers.
    pub async fn end(mut self) {
        run("start", Some(self.service)).await;
        self.ended = true;
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        eprintln!(
            "faults: starting {} again after a failed test",
            self.service.name()
        );
        match Command::new(SCRIPT)
            .args(["start", self.service.name()])
            .status()
        {
            Ok(status) if status.success() => {}
            other => eprintln!(
                "faults: `{SCRIPT} start {}` failed: {other:?}",
                self.service.name()
            ),
        }
    }
}

async fn run(action: &str, service: Option<Service>) {
    let mut command = tokio::process::Command::new(SCRIPT);
    command.arg(action);
    if let Some(service) = service {
        command.arg(service.name());
    }
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
    assert!(
        output.status.success(),
        "`{SCRIPT} {action} {}` failed:\n{}{}",
        service.map(Service::name).unwrap_or("all"),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
