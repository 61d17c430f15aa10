//! `--profiling` (spec §9.2, on by default): a CPU profile of the controller manager in the
//! pprof format at `/debug/pprof/profile?seconds=N`, one at a time, as Go's servers serve
//! it; nothing there with `--profiling=false`.

mod support;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use pprof::protos::Message as _;
use support::{Env, free_port, try_http_get, until};

/// The status code and body of a GET.
fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole response");
    let head = String::from_utf8_lossy(&response[..end]);
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, response[end + 4..].to_vec())
}

fn started(env: &Env, flags: &[&str]) -> (support::Manager, u16) {
    let port = free_port();
    let mut all = vec![format!("--port={port}"), "--address=127.0.0.1".to_string()];
    all.extend(flags.iter().map(|f| f.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let manager = support::manager(env, &all);
    until(
        || try_http_get(port, "/healthz").is_ok_and(|r| r.ends_with("ok")),
        "the controller manager's endpoint",
    );
    (manager, port)
}

#[test]
fn a_cpu_profile_in_the_pprof_format() {
    let env = Env::start();
    let (_manager, port) = started(&env, &[]);

    // Two at once: one is taken, the other refused.
    let first = std::thread::spawn(move || get(port, "/debug/pprof/profile?seconds=2"));
    std::thread::sleep(Duration::from_millis(500));
    let second = get(port, "/debug/pprof/profile?seconds=2");
    let first = first.join().unwrap();
    let (taken, refused) = if first.0 == 200 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(refused.0, 429, "{}", String::from_utf8_lossy(&refused.1));
    assert_eq!(taken.0, 200, "{}", String::from_utf8_lossy(&taken.1));
    let profile = pprof::protos::Profile::decode(taken.1.as_slice()).expect("a pprof profile");
    let name = |i: i64| profile.string_table[i as usize].as_str();
    let period = profile.period_type.as_ref().expect("a period type");
    assert_eq!((name(period.ty), name(period.unit)), ("cpu", "nanoseconds"));
    assert!(
        profile.duration_nanos >= 2_000_000_000,
        "{}",
        profile.duration_nanos
    );

    // A profile whose client went away stops: the next is taken well before its 60 s.
    let mut abandoned = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        abandoned,
        "GET /debug/pprof/profile?seconds=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(abandoned);
    until(
        || get(port, "/debug/pprof/profile?seconds=1").0 == 200,
        "a profile after one abandoned",
    );

    for bad in ["0", "601", "soon"] {
        let (code, body) = get(port, &format!("/debug/pprof/profile?seconds={bad}"));
        assert_eq!(
            code,
            400,
            "seconds={bad}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    let (_quiet, port) = started(&env, &["--profiling=false"]);
    assert_eq!(get(port, "/debug/pprof/profile?seconds=1").0, 404);
}
