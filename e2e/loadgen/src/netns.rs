//! Clients on the far side of a link: a tokio runtime whose threads all live in a named network
//! namespace (`ip netns add NAME`), so every socket a task opens there is opened in that namespace.
//!
//! The reference scenario has half its POP3 readers in the second datacenter. With the namespace
//! per runtime they are in one process with the rest of the load, so their latencies go into the
//! same histograms: no second process, no percentiles merged after the fact.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::runtime::{Builder, Handle};

/// Where a client connects from: `ADDR` (this process's namespace) or `ADDR@NETNS`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: String,
    /// The runtime to run this endpoint's sessions on; None: the caller's.
    pub runtime: Option<Handle>,
}

impl Endpoint {
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.rsplit_once('@') {
            Some((addr, ns)) => Ok(Self { addr: addr.to_owned(), runtime: Some(runtime_in(ns)?) }),
            None => Ok(Self { addr: spec.to_owned(), runtime: None }),
        }
    }

    /// Spawns `fut` on this endpoint's runtime (the current one for a plain address).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_on(self.runtime.as_ref(), fut)
    }
}

/// Spawns `fut` on `runtime`, or on the current runtime when there is none.
pub fn spawn_on<F>(runtime: Option<&Handle>, fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime.cloned().unwrap_or_else(Handle::current).spawn(fut)
}

/// A runtime whose worker and blocking threads entered /var/run/netns/`name` before doing any
/// work. It lives as long as the process: the load generator exits when the run is over, and
/// dropping a runtime from inside another one's task is not allowed.
pub fn runtime_in(name: &str) -> Result<Handle> {
    let path = format!("/var/run/netns/{name}");
    let ns = Arc::new(File::open(&path).with_context(|| format!("no network namespace {path}"))?);
    // Tried first on a thread of its own (setns moves the calling thread), to fail here with a reason.
    let probe = ns.clone();
    std::thread::spawn(move || enter(&probe))
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace probe panicked"))?
        .with_context(|| format!("cannot enter {path} (needs root)"))?;
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("netns-{name}"))
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = enter(&ns) {
                // A thread left in the wrong namespace would measure the wrong path: stop the run.
                eprintln!("popfleet-load: a runtime thread could not enter its network namespace: {e}");
                std::process::abort();
            }
        })
        .build()?;
    let handle = rt.handle().clone();
    std::mem::forget(rt);
    Ok(handle)
}

fn enter(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `ns` keeps open, and changes this thread alone.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A namespace of its own with only its loopback up; removed when dropped.
    struct TestNs(String);

    impl TestNs {
        fn new() -> Self {
            let name = format!("popfleet-load-test-{}", std::process::id());
            let ok = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
            assert!(ok(&["netns", "add", &name]), "`ip netns add` failed: this test needs root, as e2e/test-all has");
            assert!(ok(&["-n", &name, "link", "set", "lo", "up"]));
            Self(name)
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[tokio::test]
    async fn sockets_of_a_netns_endpoint_are_in_that_namespace() {
        let ns = TestNs::new();
        let far = Endpoint::parse(&format!("127.0.0.1:0@{}", ns.0)).unwrap();
        // A listener opened on the namespace's runtime is on its loopback, not on ours.
        let listener = far.spawn(async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() }).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = far.spawn(async move { listener.accept().await.map(|_| ()) });
        let there = far.spawn(async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map(|_| ()) });
        assert!(there.await.unwrap().is_ok(), "a client in the namespace reaches the listener there");
        accept.await.unwrap().unwrap();
        let here = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(here.is_err(), "the caller's namespace has no such listener: {here:?}");
        assert!(Endpoint::parse("127.0.0.1:1@no-such-namespace").is_err());
        assert!(Endpoint::parse("127.0.0.1:1").unwrap().runtime.is_none());
    }
}
