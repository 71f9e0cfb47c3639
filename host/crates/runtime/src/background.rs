//! The host's own calls (usage collection) at a lower CPU priority than tenants' calls.
//!
//! A collection pass runs up to `collector::PARALLELISM` report calls at once. On the
//! tenants' runtime they took the same worker threads as tenants' invokes, so a pass
//! beside four busy invokers cut their rate to 0.27× (issue 12). Here such calls run on
//! a runtime of their own whose threads have the lowest nice value the kernel grants
//! (`NICE`): when the machine is idle they use every core, and when tenants' calls want
//! the CPU the kernel gives it to them first. The calls still end: a nice-19 thread
//! keeps a small share of a busy core (about 1.5%), so a report of a few hundred
//! microseconds of guest time meets its deadline, and one that does not is retried later
//! with backoff like any failed report.
//!
//! What runs here holds nothing a tenant's call waits for while it computes: no write
//! transaction (the ledger's thread writes, at normal priority) and no lock but the
//! short ones of the sandbox pool and the SQLite reader list.

use std::future::Future;
use std::sync::OnceLock;

/// The nice value of background threads: the lowest priority Linux has. Raising the
/// nice value of one's own thread needs no privilege.
pub const NICE: i32 = 19;

/// The process's background runtime; `None` if it could not be started (then background
/// work runs where it is awaited, at tenants' priority, and a warning says so).
fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            // As many threads as cores: an idle machine collects with all of them.
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("kiosk-background")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .map_err(|e| {
                    tracing::warn!(error = %e, "cannot start the background runtime; host calls run at tenants' priority");
                })
                .ok()
        })
        .as_ref()
}

/// Lowers the calling thread's priority to `NICE` (on Linux the nice value belongs to
/// the thread, not the process).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
        tracing::warn!(error = %e, "cannot lower a background thread's priority");
    }
}

/// Whether the calling thread is a background thread with its priority lowered (for
/// tests: the nice value the kernel reports for this thread).
pub fn current_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The background task ended without an answer: the process is shutting down its
/// background runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the background runtime stopped before the work ended")]
pub struct Stopped;

/// Runs `work` on the background runtime and waits for it. Dropping the returned future
/// cancels the work, as dropping `work` itself would. A panic in `work` resumes here.
pub async fn run<F>(work: F) -> Result<F::Output, Stopped>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(runtime) = runtime() else { return Ok(work.await) };
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(runtime.spawn(work));
    match (&mut task.0).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_thread_of_lower_priority() {
        let here = current_nice();
        let (name, nice) = run(async { (std::thread::current().name().map(str::to_owned), current_nice()) })
            .await
            .expect("the background runtime answers");
        assert_eq!(name.as_deref(), Some("kiosk-background"));
        if cfg!(target_os = "linux") {
            assert_eq!(nice, Some(NICE), "background threads run at nice {NICE}");
            assert_ne!(here, Some(NICE), "the caller's thread keeps its priority");
        }
    }

    #[tokio::test]
    async fn a_panic_in_background_work_reaches_the_caller() {
        let caught = tokio::spawn(run(async { panic!("guest host bug") })).await.expect_err("the panic resumes");
        assert!(caught.is_panic());
    }
}
