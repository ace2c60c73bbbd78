//! For tests (this crate's, and the in-process cluster's with the `test-support` feature):
//! a real etcd member (Debian's `etcd-server`) on free loopback ports with a temporary data
//! directory.
//!
//! `cargo test` alone passes on a machine without etcd: [`EtcdServer::start`] then returns
//! `None` and the test returns early, saying so. `scripts/test.sh` installs etcd and sets
//! `LANCEFLEET_REQUIRE_ETCD=1`, which turns a missing etcd into a failure.

#![allow(clippy::expect_used, clippy::panic, reason = "test support: a broken fixture fails the test")]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::config::ControlConfig;
use crate::etcd::{Client, connect};

/// Set (to anything but `0`) where a missing etcd must fail the tests instead of skipping them.
pub const REQUIRE_ETCD: &str = "LANCEFLEET_REQUIRE_ETCD";

/// One etcd member; killed on drop. Stop and spawn it again for an outage: it keeps its
/// data and ports.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

impl EtcdServer {
    /// Starts a member and waits until it answers; `None` when etcd is not installed and
    /// [`REQUIRE_ETCD`] is not set.
    pub async fn start() -> Option<Self> {
        if !etcd_installed() {
            let required = std::env::var(REQUIRE_ETCD).is_ok_and(|value| value != "0");
            assert!(!required, "{REQUIRE_ETCD} is set but etcd is not installed (Debian package etcd-server)");
            eprintln!("skipped: etcd is not installed (Debian package etcd-server; scripts/test.sh installs it)");
            return None;
        }
        let mut server = Self {
            child: None,
            data: tempfile::tempdir().expect("tempdir"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        server.spawn().await;
        Some(server)
    }

    /// Its client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts the process (again, after [`Self::stop`]) and waits until it answers.
    pub async fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.data.path().join("etcd"))
            .args(["--listen-client-urls", &self.endpoint(), "--advertise-client-urls", &self.endpoint()])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}"), "--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let mut client = self.client().await;
        for _ in 0..200 {
            if client.status().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd did not start; data dir {}", self.data.path().display());
    }

    /// A client of this member.
    pub async fn client(&self) -> Client {
        let config = ControlConfig { etcd_endpoints: vec![self.endpoint()], ..ControlConfig::default() };
        connect(&config).await.expect("client")
    }

    /// Kills the process (an outage); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether an `etcd` executable is on `PATH`.
fn etcd_installed() -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("etcd").is_file()))
}
