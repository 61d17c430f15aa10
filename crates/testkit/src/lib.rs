//! Helpers for tests and benchmarks that run real peers on loopback.

pub mod https;
mod pki;

pub use pki::{Pair, Pki};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released for the caller's server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on loopback")
}

/// A real etcd server (Debian's `etcd-server`) on loopback, with its own data directory.
/// Killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<EtcdTls>,
}

/// Certificates of an etcd that serves TLS and requires client certificates.
pub struct EtcdTls {
    pub pki: Pki,
    pub server: Pair,
    pub client: Pair,
}

impl Etcd {
    /// Starts etcd and waits until it answers. Panics with a clear message if the binary is
    /// missing: the README test command installs it.
    pub fn start() -> Etcd {
        Self::start_with(None)
    }

    /// Starts etcd serving TLS on its client port, requiring client certificates.
    pub fn start_tls() -> Etcd {
        let pki = Pki::new();
        let server = pki.server("etcd-server");
        let client = pki.client("etcd-client", "apiserver", &[]);
        Self::start_with(Some(EtcdTls {
            pki,
            server,
            client,
        }))
    }

    fn start_with(tls: Option<EtcdTls>) -> Etcd {
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        etcd.launch();
        etcd
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs the server, leaving its data directory for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let bin = which("etcd").unwrap_or_else(|| {
            panic!("etcd not found on PATH: install Debian's etcd-server (the README test command does)")
        });
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log file");
        let mut cmd = Command::new(bin);
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.server.cert.display()))
                .arg(format!("--key-file={}", tls.server.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.pki.ca_file().display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = format!("127.0.0.1:{}", self.client_port);
        while Instant::now() < deadline {
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                panic!("etcd exited with {status}: {log}");
            }
            if self.answers(&addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not become healthy on {addr} within 30 s");
    }
}

impl Etcd {
    /// Whether etcd is up: `/health` over plain HTTP; with TLS, whether the port accepts
    /// connections (the client then waits for a leader through its own retries).
    fn answers(&self, addr: &str) -> bool {
        if self.tls.is_some() {
            std::net::TcpStream::connect(addr).is_ok()
        } else {
            health_ok(addr)
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd answers `GET /health` on its client port with `{"health":"true"}` once it has a leader.
fn health_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let req = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// The first executable named `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Resident memory of a process (`None`: this one), in bytes: (current `VmRSS`, peak `VmHWM`).
pub fn memory(pid: Option<u32>) -> (u64, u64) {
    let status = std::fs::read_to_string(proc_file(pid, "status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Bytes in MiB, as the benchmarks print memory.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Resets a process's peak so the next [`memory`] reading measures from now (Linux
/// `clear_refs` 5).
pub fn reset_peak_memory(pid: Option<u32>) {
    let _ = std::fs::write(proc_file(pid, "clear_refs"), "5");
}

/// CPU time (user + system) a process has used so far; this process when `pid` is `None`.
pub fn cpu_time(pid: Option<u32>) -> std::time::Duration {
    let stat = std::fs::read_to_string(proc_file(pid, "stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // Linux reports them in USER_HZ, 100 per second on every architecture it runs here.
    std::time::Duration::from_millis(ticks * 10)
}

fn proc_file(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// A number from the environment, for benchmark sizes.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The runtime benchmarks and in-process tests run on: two workers, as this machine has two
/// cores.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
