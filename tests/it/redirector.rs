//! `acmekeep redirector`: the built binary on a free loopback port, its root refusal and
//! privilege drop, and an issuance where it serves the webroot Pebble validates against.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `nobody`'s uid, the user these tests drop to when run as root.
fn nobody_uid() -> u32 {
    nix::unistd::User::from_name("nobody")
        .expect("passwd lookup")
        .expect("a nobody user")
        .uid
        .as_raw()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Waits until the redirector answers on `port`.
fn wait_listening(port: u16, running: &Running) {
    let up = poll_until(Duration::from_secs(15), Duration::from_millis(50), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(
        up.is_some(),
        "redirector (pid {}) never listened on {port}",
        running.id()
    );
}

/// Sends SIGTERM and returns the finished run (which must have exited 0: graceful shutdown).
fn terminate(running: Running) -> Run {
    let pid = running.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
    let run = running.wait();
    run.assert_success();
    run
}

/// The effective uid of a process, from /proc.
fn process_euid(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("Uid: line")
}

/// A raw HTTP/1.1 request with a chosen `Host` header.
fn get_with_host(port: u16, path: &str, host: &str) -> HttpResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("end of headers");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn redirector_refuses_root_then_serves_challenges_and_redirects_as_nobody() {
    let state = StateDir::new();
    // Readable by nobody: the temporary directory itself is 0700.
    let challenges = state.scratch_dir("challenges");
    chmod(challenges.parent().expect("parent"), 0o711);
    chmod(&challenges, 0o755);
    fs::write(challenges.join(TOKEN), format!("{TOKEN}.thumbprint")).expect("write");
    chmod(&challenges.join(TOKEN), 0o644);
    let secret = state.scratch_dir("secret").join("file");
    fs::write(&secret, "not for the web").expect("write");
    chmod(&secret, 0o644);
    std::os::unix::fs::symlink(&secret, challenges.join("link")).expect("symlink");
    fs::create_dir(challenges.join("subdir")).expect("mkdir");

    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let path = challenges.to_string_lossy().into_owned();
    let mut args = vec!["-v", "redirector", "--bind", &bind, "--path", &path];

    if is_root() {
        let run = acmekeep(&state, &args);
        run.assert_code(2)
            .assert_stderr_contains("refusing to run the redirector as root")
            .assert_stderr_contains("--user");
        args.extend(["--user", "nobody"]);
    }
    let running = spawn_acmekeep(&state, &args, &RunOpts::default());
    wait_listening(port, &running);
    if is_root() {
        // The sockets are bound before root is dropped, so the port may answer a moment
        // before the uid changes.
        let dropped = poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
            (process_euid(running.id()) == nobody_uid()).then_some(())
        });
        assert!(
            dropped.is_some(),
            "did not drop root: euid {}",
            process_euid(running.id())
        );
    }

    let base = format!("http://127.0.0.1:{port}");
    let rsp = http_get(&format!("{base}/.well-known/acme-challenge/{TOKEN}")).expect("GET");
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.text(), format!("{TOKEN}.thumbprint"));
    assert_eq!(rsp.header("content-type"), Some("text/plain"));
    assert_eq!(rsp.header("server"), Some("acmekeep-redirector"));
    assert_eq!(
        rsp.header("content-security-policy"),
        Some("default-src 'none'")
    );
    for (what, path) in [
        ("symlink", "link"),
        ("directory", "subdir"),
        ("missing file", "missing"),
        ("listing", ""),
    ] {
        let rsp = http_get(&format!("{base}/.well-known/acme-challenge/{path}")).expect("GET");
        assert_eq!(rsp.status, 404, "{what}: {}", rsp.text());
    }

    let rsp = http_get(&format!("{base}/x?y=1")).expect("GET");
    assert_eq!(rsp.status, 308);
    assert_eq!(
        rsp.header("location"),
        Some(format!("https://127.0.0.1:{port}/x?y=1").as_str())
    );
    assert_eq!(
        rsp.header("cache-control"),
        Some("public; max-age=31536000")
    );
    let rsp = get_with_host(port, "/x?y=1", "www.example.org");
    assert_eq!(rsp.status, 308);
    assert_eq!(
        rsp.header("location"),
        Some("https://www.example.org/x?y=1")
    );
    let rsp = get_with_host(port, "/x", "bad host");
    assert_eq!(rsp.status, 400);
    assert_eq!(rsp.header("location"), None);

    let run = terminate(running);
    assert!(
        run.stderr.contains(&format!(
            "GET \"/.well-known/acme-challenge/{TOKEN}\" host \"127.0.0.1:{port}\" -> 200"
        )),
        "requests are logged at debug level\n{}",
        run.describe()
    );
}

#[test]
fn redirector_serves_the_webroot_for_issuance() {
    const NAME: &str = "redirected.example.org";
    let pebble = Pebble::start(PebbleOpts::default());
    let state = StateDir::new();
    let webroot = state.scratch_dir("webroot");
    chmod(webroot.parent().expect("parent"), 0o711);
    chmod(&webroot, 0o755);
    // acmekeep writes challenge files into the webroot; nothing of its own listens.
    state.write_conf_target(&webroot_conf_target(&pebble, &webroot));
    state.write_standard_responses();

    // No --path: the redirector serves the first webroot of conf/target. acmetool's
    // --service.uid spelling of --user.
    let bind = format!("127.0.0.1:{}", pebble.http_port());
    let mut args = vec!["-v", "redirector", "--bind", &bind];
    if is_root() {
        args.push("--service.uid=nobody");
    }
    let redirector = spawn_acmekeep(&state, &args, &RunOpts::default());
    wait_listening(pebble.http_port(), &redirector);

    acmekeep(&state, &["want", NAME]).assert_success();
    assert!(
        state.live_link(NAME).is_some(),
        "no live/{NAME}\n{}",
        state.tree()
    );

    let run = terminate(redirector);
    assert!(
        run.stderr.contains("/.well-known/acme-challenge/") && run.stderr.contains("-> 200"),
        "Pebble never fetched a challenge through the redirector\n{}",
        run.describe()
    );
    assert!(
        run.stderr
            .contains(&format!("serving {}", webroot.display())),
        "the redirector did not pick the webroot from conf/target\n{}",
        run.describe()
    );
}
