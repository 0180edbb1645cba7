//! The contrib DNS hooks (`contrib/hooks/tinydns`, `contrib/hooks/nsupdate`) run as acmekeep
//! runs hooks (argv, empty stdin, working directory `/`), against the real tools: a djbdns
//! data file rebuilt by `tinydns-data` and read back with `tinydns-get`, and a Knot DNS
//! server on a loopback port taking TSIG-signed updates from `nsupdate`, read back with `dig`.
//!
//! Each test is skipped, with a message, only if a tool it needs is missing (Debian packages
//! `tinydns`, `bind9-dnsutils`, `knot`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port_with, poll_until};

/// Two TXT values as the CA derives them: base64url(SHA-256(...)), 43 characters.
const V1: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
const V2: &str = "w6uP8Tcg6K2QR905Rms8iXTlksL6OD1KOWBxTK7wxPI";
/// Bound for one hook run (the nsupdate hook waits at most DNS_SYNC_TIMEOUT).
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// Settings the hooks read from the environment; removed so the caller's cannot leak in.
const SETTINGS: &[&str] = &[
    "TINYDNS_ROOT",
    "TINYDNS_LOCK_TIMEOUT",
    "TTL",
    "NSUPDATE_SERVER",
    "NSUPDATE_PORT",
    "NSUPDATE_KEY",
    "NSUPDATE_ARGS",
    "ZONE",
    "DNS_SYNC_TIMEOUT",
    "DNS_SYNC_SERVERS",
    "ACME_DNS_CONFIG",
    "ACME_TINYDNS_CONFIG",
];

/// Arguments a malicious CA (or a bug) could send; every one must be refused with exit 1.
/// `canary` is a path no command may create.
fn hostile_args(canary: &Path) -> Vec<(String, Vec<String>)> {
    let c = canary.display();
    let long_name = format!("{}.example.test", vec!["a".repeat(60); 4].join("."));
    assert!(long_name.len() > 253);
    let s = |v: &str| v.to_owned();
    let dns =
        |host: &str, target: &str, txt: &str, flag: &str| vec![s(host), s(target), s(txt), s(flag)];
    let mut cases = vec![
        ("path traversal", dns("../x", "", V1, "")),
        ("shell metacharacters", dns("a;rm -rf /", "", V1, "")),
        (
            "command substitution",
            dns(&format!("$(touch {c})"), "", V1, ""),
        ),
        ("backticks", dns(&format!("`touch {c}`"), "", V1, "")),
        (
            "newline in hostname",
            dns("x.example.test\nevil.example.test", "", V1, ""),
        ),
        ("leading dash", dns("-x.example.test", "", V1, "")),
        ("empty label", dns("x..example.test", "", V1, "")),
        ("trailing dot", dns("x.example.test.", "", V1, "")),
        ("empty hostname", dns("", "", V1, "")),
        ("space", dns("x example.test", "", V1, "")),
        (
            "colon (tinydns field separator)",
            dns("x.example.test:1.2.3.4", "", V1, ""),
        ),
        ("inner wildcard", dns("x.*.example.test", "", V1, "")),
        ("over 253 bytes", dns(&long_name, "", V1, "")),
        (
            "label over 63 bytes",
            dns(&format!("{}.example.test", "a".repeat(64)), "", V1, ""),
        ),
        ("non-ASCII", dns("xé.example.test", "", V1, "")),
        (
            "44-char txt",
            dns("x.example.test", "", &format!("{V1}A"), ""),
        ),
        ("42-char txt", dns("x.example.test", "", &V1[..42], "")),
        (
            "txt with colon",
            dns("x.example.test", "", &format!("{}:9", &V1[..41]), ""),
        ),
        (
            "txt with quote",
            dns("x.example.test", "", &format!("{}\"", &V1[..42]), ""),
        ),
        (
            "txt with newline",
            dns("x.example.test", "", &format!("{}\nA", &V1[..41]), ""),
        ),
        (
            "txt with slash",
            dns("x.example.test", "", &format!("{}/", &V1[..42]), ""),
        ),
        (
            "txt command substitution",
            dns("x.example.test", "", &format!("$(touch {c})"), ""),
        ),
        ("bad wildcard flag", dns("x.example.test", "", V1, "yes")),
        (
            "wildcard flag with newline",
            dns("x.example.test", "", V1, "wildcard\n"),
        ),
        ("target with newline", dns("x.example.test", "a\nb", V1, "")),
        (
            "target with escape",
            dns("x.example.test", "a\x1b[2Jb", V1, ""),
        ),
        ("too few arguments", vec![s("x.example.test"), s("")]),
        (
            "too many arguments",
            vec![s("x.example.test"), s(""), s(V1), s(""), s("extra")],
        ),
    ];
    // The same hostile values on the wildcard path.
    cases.push((
        "wildcard prefix then traversal",
        dns("*.../x", "", V1, "wildcard"),
    ));
    cases.push((
        "double wildcard",
        dns("*.*.x.example.test", "", V1, "wildcard"),
    ));
    cases
        .into_iter()
        .map(|(what, args)| (what.to_owned(), args))
        .collect()
}

/// Where a tool is: `$PATH`, then the sbin directories (tinydns-data and knotd live there).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Whether every tool is installed; prints why the test is skipped if not.
fn tools_installed(test: &str, tools: &[(&str, &str)]) -> bool {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, _)| find_tool(tool).is_none())
        .map(|(tool, package)| format!("{tool} (Debian package `{package}`)"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!("SKIPPED {test}: missing {}", missing.join(", "));
    false
}

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| panic!("{name} is not installed"))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/hooks")
        .join(name)
}

/// One hook run.
#[derive(Debug)]
struct HookRun {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl HookRun {
    fn describe(&self) -> String {
        format!(
            "hook {:?}\n  exit code: {:?}\n----- stdout -----\n{}\n----- stderr -----\n{}\n------------------",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        self
    }
}

/// Runs `hook <args...>` as acmekeep would (working directory `/`, stdin empty), with the
/// hook's settings taken only from `env`, killing it after [`HOOK_TIMEOUT`].
fn run_hook(hook: &Path, args: &[String], env: &[(&str, String)]) -> HookRun {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("stdout");
    let err = out_dir.path().join("stderr");
    let mut cmd = Command::new(hook);
    cmd.args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("create stdout"))
        .stderr(fs::File::create(&err).expect("create stderr"));
    for name in SETTINGS {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", hook.display()));
    let deadline = Instant::now() + HOOK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hook") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = HookRun {
        args: args.to_vec(),
        code: status.and_then(|s| s.code()),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    };
    assert!(status.is_some(), "hook timed out\n{}", run.describe());
    run
}

fn dns_args(event: &str, host: &str, txt: &str, wildcard: &str) -> Vec<String> {
    [event, host, "target-file", txt, wildcard]
        .map(str::to_owned)
        .to_vec()
}

fn with_event(event: &str, args: &[String]) -> Vec<String> {
    std::iter::once(event.to_owned())
        .chain(args.iter().cloned())
        .collect()
}

/// The names in a directory, sorted.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// tinydns

/// Unrelated content, including an admin's own TXT record at the challenge name and a
/// look-alike marker, none of which the hook may touch.
const TINYDNS_DATA: &str = "\
# example.test, maintained by hand
Zexample.test:ns1.example.test:hostmaster.example.test:2024010101:16384:2048:1048576:2560:3600
&example.test::ns1.example.test:3600
+ns1.example.test:192.0.2.53:3600
+www.example.test:192.0.2.1:300

'txt.example.test:hello world:300
'_acme-challenge.x.example.test:admin-static-value:300
#acmekeep-owned _acme-challenge.x.example.test AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
-disabled.example.test:192.0.2.9:300
";

/// A tinydns root directory with `data` and a built `data.cdb`, and the hook's config.
struct Tinydns {
    dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

impl Tinydns {
    fn new(data: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("mkdir root");
        fs::write(root.join("data"), data).expect("write data");
        let config = dir.path().join("acme-tinydns");
        fs::write(
            &config,
            format!("TINYDNS_ROOT='{}'\nTTL=120\n", root.display()),
        )
        .expect("write config");
        let t = Self { dir, root, config };
        t.build();
        t
    }

    fn build(&self) {
        let out = Command::new(tool("tinydns-data"))
            .current_dir(&self.root)
            .output()
            .expect("run tinydns-data");
        assert!(out.status.success(), "tinydns-data: {out:?}");
    }

    fn data(&self) -> Vec<u8> {
        fs::read(self.root.join("data")).expect("read data")
    }

    fn cdb(&self) -> Vec<u8> {
        fs::read(self.root.join("data.cdb")).expect("read data.cdb")
    }

    fn hook(&self, args: &[String]) -> HookRun {
        run_hook(
            &script("tinydns"),
            args,
            &[(
                "ACME_TINYDNS_CONFIG",
                self.config.to_string_lossy().into_owned(),
            )],
        )
    }

    fn start(&self, host: &str, txt: &str, wildcard: &str) -> HookRun {
        self.hook(&dns_args("challenge-dns-start", host, txt, wildcard))
    }

    fn stop(&self, host: &str, txt: &str, wildcard: &str) -> HookRun {
        self.hook(&dns_args("challenge-dns-stop", host, txt, wildcard))
    }

    /// The `answer:` lines of `tinydns-get TXT <name>`, as served from data.cdb.
    fn txt_answers(&self, name: &str) -> Vec<String> {
        let out = Command::new(tool("tinydns-get"))
            .args(["TXT", name])
            .current_dir(&self.root)
            .output()
            .expect("run tinydns-get");
        assert!(out.status.success(), "tinydns-get: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("answer: "))
            .map(str::to_owned)
            .collect()
    }

    /// Whether data.cdb answers TXT `name` with `value` (TTL `ttl`). tinydns-get prints the
    /// TXT data with its length byte in octal: 43 is \053, printed as "+".
    fn serves(&self, name: &str, value: &str, ttl: u32) -> bool {
        let want = format!("answer: {name} {ttl} 16 +{value}");
        self.txt_answers(name).contains(&want)
    }
}

const TINYDNS_TOOLS: &[(&str, &str)] = &[("tinydns-data", "tinydns"), ("tinydns-get", "tinydns")];
const REC: &str = "_acme-challenge.x.example.test";

#[test]
fn tinydns_hook_adds_and_removes_only_its_own_lines() {
    if !tools_installed(
        "tinydns_hook_adds_and_removes_only_its_own_lines",
        TINYDNS_TOOLS,
    ) {
        return;
    }
    let t = Tinydns::new(TINYDNS_DATA);
    let data_path = t.root.join("data");
    fs::set_permissions(&data_path, fs::Permissions::from_mode(0o640)).expect("chmod data");
    let original = t.data();
    assert!(!t.serves(REC, V1, 120));

    // start: our two lines are appended, everything before is byte-identical, and the value
    // is served.
    t.start("x.example.test", V1, "").assert_code(0);
    let expected = format!("{TINYDNS_DATA}#acmekeep-owned {REC} {V1}\n'{REC}:{V1}:120\n");
    assert_eq!(String::from_utf8_lossy(&t.data()), expected);
    assert!(t.serves(REC, V1, 120), "{:?}", t.txt_answers(REC));
    assert!(
        t.txt_answers(REC)
            .iter()
            .any(|l| l.contains("admin-static-value")),
        "{:?}",
        t.txt_answers(REC)
    );
    // The data file keeps its mode; no temporary file is left behind.
    let mode = fs::metadata(&data_path)
        .expect("stat data")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(
        dir_names(&t.root),
        ["data", "data.acmekeep.lock", "data.cdb"]
    );

    // A second start with the same value changes nothing.
    t.start("x.example.test", V1, "").assert_code(0);
    assert_eq!(String::from_utf8_lossy(&t.data()), expected);

    // The wildcard of the same name shares the record name; both values are served.
    t.start("*.x.example.test", V2, "wildcard").assert_code(0);
    assert!(
        t.serves(REC, V1, 120) && t.serves(REC, V2, 120),
        "{:?}",
        t.txt_answers(REC)
    );

    // stop removes exactly one value.
    t.stop("x.example.test", V1, "").assert_code(0);
    assert!(!t.serves(REC, V1, 120), "{:?}", t.txt_answers(REC));
    assert!(t.serves(REC, V2, 120), "{:?}", t.txt_answers(REC));
    assert_eq!(
        String::from_utf8_lossy(&t.data()),
        format!("{TINYDNS_DATA}#acmekeep-owned {REC} {V2}\n'{REC}:{V2}:120\n")
    );

    // The last stop leaves the original file, byte for byte, and nothing is served.
    t.stop("*.x.example.test", V2, "wildcard").assert_code(0);
    assert_eq!(t.data(), original);
    assert!(!t.serves(REC, V2, 120), "{:?}", t.txt_answers(REC));
    assert!(
        t.txt_answers(REC)
            .iter()
            .any(|l| l.contains("admin-static-value"))
    );
    let mode = fs::metadata(&data_path)
        .expect("stat data")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640);

    // Stopping again finds nothing of ours: "not handled", file untouched.
    let cdb = t.cdb();
    t.stop("x.example.test", V1, "").assert_code(42);
    assert_eq!(t.data(), original);
    assert_eq!(t.cdb(), cdb);
    // data.tmp is tinydns-data's own half-written cdb, left as a manual run would leave it.
    let mut names = dir_names(&t.root);
    names.retain(|n| n != "data.tmp");
    assert_eq!(names, ["data", "data.acmekeep.lock", "data.cdb"]);
}

#[test]
fn tinydns_hook_refuses_hostile_arguments_and_other_events() {
    if !tools_installed(
        "tinydns_hook_refuses_hostile_arguments_and_other_events",
        TINYDNS_TOOLS,
    ) {
        return;
    }
    let t = Tinydns::new(TINYDNS_DATA);
    let canary = t.dir.path().join("canary");
    let data = t.data();
    let cdb = t.cdb();
    let names = dir_names(&t.root);
    for (what, args) in hostile_args(&canary) {
        for event in ["challenge-dns-start", "challenge-dns-stop"] {
            let run = t.hook(&with_event(event, &args));
            run.assert_code(1);
            assert!(
                run.stderr.contains("tinydns: "),
                "{what}: {}",
                run.describe()
            );
            assert_eq!(t.data(), data, "{what}: data changed");
            assert_eq!(t.cdb(), cdb, "{what}: data.cdb changed");
            assert_eq!(dir_names(&t.root), names, "{what}: files appeared");
            assert!(!canary.exists(), "{what}: a command ran");
        }
    }
    // Other events are not handled.
    for args in [
        vec!["live-updated".to_owned()],
        vec!["reconcile-failed".to_owned()],
        dns_args("challenge-http-start", "x.example.test", V1, "")[..4].to_vec(),
        vec![],
    ] {
        t.hook(&args).assert_code(42);
    }
    // A valid name outside the zones this data serves is not handled either.
    t.start("x.other.test", V1, "").assert_code(42);
    assert_eq!(t.data(), data);
    assert_eq!(t.cdb(), cdb);
    // Bad settings are refused too.
    fs::write(
        &t.config,
        format!("TINYDNS_ROOT='{}'\nTTL='60;id'\n", t.root.display()),
    )
    .expect("write config");
    t.start("x.example.test", V1, "").assert_code(1);
    assert_eq!(t.data(), data);
}

#[test]
fn tinydns_hook_puts_data_back_when_the_build_fails() {
    if !tools_installed(
        "tinydns_hook_puts_data_back_when_the_build_fails",
        TINYDNS_TOOLS,
    ) {
        return;
    }
    let t = Tinydns::new(TINYDNS_DATA);
    let cdb = t.cdb();
    // The admin broke the file since the last build: the rebuild fails, so the hook must
    // not leave its line behind (and data.cdb stays the last good one).
    let broken = format!("{TINYDNS_DATA}!this line is not tinydns-data syntax\n");
    fs::write(t.root.join("data"), &broken).expect("write data");
    let run = t.start("x.example.test", V1, "");
    run.assert_code(1);
    assert!(
        run.stderr.contains("tinydns-data failed"),
        "{}",
        run.describe()
    );
    assert_eq!(String::from_utf8_lossy(&t.data()), broken);
    assert_eq!(t.cdb(), cdb);
    // data.tmp is tinydns-data's own half-written cdb, left as a manual run would leave it.
    let mut names = dir_names(&t.root);
    names.retain(|n| n != "data.tmp");
    assert_eq!(names, ["data", "data.acmekeep.lock", "data.cdb"]);
}

#[test]
fn tinydns_hook_handles_a_missing_final_newline_and_no_cdb_yet() {
    if !tools_installed(
        "tinydns_hook_handles_a_missing_final_newline_and_no_cdb_yet",
        TINYDNS_TOOLS,
    ) {
        return;
    }
    let unterminated = TINYDNS_DATA.trim_end_matches('\n');
    let t = Tinydns::new(unterminated);
    fs::remove_file(t.root.join("data.cdb")).expect("rm data.cdb");
    t.start("x.example.test", V1, "").assert_code(0);
    // The last line got its newline instead of running into ours; nothing else changed.
    assert_eq!(
        String::from_utf8_lossy(&t.data()),
        format!("{unterminated}\n#acmekeep-owned {REC} {V1}\n'{REC}:{V1}:120\n")
    );
    assert!(t.serves(REC, V1, 120), "{:?}", t.txt_answers(REC));
    t.stop("x.example.test", V1, "").assert_code(0);
    assert_eq!(
        String::from_utf8_lossy(&t.data()),
        format!("{unterminated}\n")
    );
}

#[test]
fn tinydns_hooks_running_at_once_lose_no_update() {
    if !tools_installed(
        "tinydns_hooks_running_at_once_lose_no_update",
        TINYDNS_TOOLS,
    ) {
        return;
    }
    let t = Tinydns::new(TINYDNS_DATA);
    let original = t.data();
    // Distinct 43-character values, one per concurrent hook.
    let values: Vec<String> = (0..8).map(|i| format!("{}{i:03}", &V1[..40])).collect();
    let hosts: Vec<String> = (0..8).map(|i| format!("h{i}.example.test")).collect();
    let run_all = |event: &str| {
        std::thread::scope(|s| {
            let handles: Vec<_> = hosts
                .iter()
                .zip(&values)
                .map(|(h, v)| s.spawn(|| t.hook(&dns_args(event, h, v, ""))))
                .collect();
            for h in handles {
                h.join().expect("hook thread").assert_code(0);
            }
        });
    };
    run_all("challenge-dns-start");
    for (h, v) in hosts.iter().zip(&values) {
        let rec = format!("_acme-challenge.{h}");
        assert!(t.serves(&rec, v, 120), "{rec}: {:?}", t.txt_answers(&rec));
    }
    run_all("challenge-dns-stop");
    assert_eq!(t.data(), original);
    for h in &hosts {
        assert!(t.txt_answers(&format!("_acme-challenge.{h}")).is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// nsupdate + Knot

const TSIG_SECRET: &str = "/AOJrBRqV6+5oMizHSZrDgz/t9GYkXggneERBHVpnWg=";
const WRONG_SECRET: &str = "FZ7ZX5wIP2BEH3JQ9NZqMQf7LYw9p5p6BP1MYiPbhlE=";
const NSUPDATE_TOOLS: &[(&str, &str)] = &[
    ("nsupdate", "bind9-dnsutils"),
    ("dig", "bind9-dnsutils"),
    ("knotd", "knot"),
];
const A_REC: &str = "_acme-challenge.a.example.test";

/// A Knot DNS server on a loopback port, authoritative for `example.test`, taking dynamic
/// updates signed with the TSIG key `acme-key`; killed on drop.
struct Knot {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Knot {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["zones", "run", "db"] {
            fs::create_dir(d.join(sub)).expect("mkdir");
        }
        let port = free_port_with(true);
        let conf = format!(
            r#"server:
    rundir: "{d}/run"
    listen: 127.0.0.1@{port}
database:
    storage: "{d}/db"
log:
  - target: stderr
    any: info
key:
  - id: acme-key
    algorithm: hmac-sha256
    secret: {TSIG_SECRET}
acl:
  - id: acme-update
    key: acme-key
    action: update
template:
  - id: default
    storage: "{d}/zones"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: example.test
    acl: acme-update
"#,
            d = d.display()
        );
        fs::write(d.join("knot.conf"), conf).expect("write knot.conf");
        fs::write(
            d.join("zones/example.test.zone"),
            "$ORIGIN example.test.\n$TTL 300\n\
             @ SOA ns1 hostmaster 1 3600 600 86400 60\n\
             @ NS ns1\n\
             ns1 A 127.0.0.1\n\
             _acme-challenge.a TXT \"admin-static-value\"\n",
        )
        .expect("write zone");
        let log = fs::File::create(d.join("knot.log")).expect("create knot.log");
        let child = Command::new(tool("knotd"))
            .arg("-c")
            .arg(d.join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start knotd");
        let mut knot = Self { dir, port, child };
        let up = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
            knot.soa_serial()
        });
        if up.is_none() {
            let _ = knot.child.kill();
            panic!("knotd did not come up:\n{}", knot.log());
        }
        knot
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }

    /// `dig +short` for one query against this server; `None` if dig failed.
    fn dig(&self, rtype: &str, name: &str) -> Option<Vec<String>> {
        let out = Command::new(tool("dig"))
            .args(["+short", "+norecurse", "+time=2", "+tries=1", "-p"])
            .arg(self.port.to_string())
            .args(["@127.0.0.1", rtype, name])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
        )
    }

    fn soa_serial(&self) -> Option<String> {
        let lines = self.dig("SOA", "example.test")?;
        lines.first()?.split_whitespace().nth(2).map(str::to_owned)
    }

    /// The TXT values served at `name`, unquoted, sorted.
    fn txt(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .dig("TXT", name)
            .expect("dig TXT")
            .iter()
            .map(|l| l.trim_matches('"').to_owned())
            .collect();
        v.sort();
        v
    }

    /// Writes the hook's config (plus `extra` lines) and a TSIG key file with `secret`.
    fn config(&self, secret: &str, extra: &str) -> PathBuf {
        let d = self.dir.path();
        let key = d.join("tsig.key");
        fs::write(
            &key,
            format!("key \"acme-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"),
        )
        .expect("write key");
        let config = d.join("acme-dns");
        fs::write(
            &config,
            format!(
                "NSUPDATE_SERVER=127.0.0.1\nNSUPDATE_PORT={port}\nNSUPDATE_KEY='{key}'\n\
                 TTL=90\nDNS_SYNC_TIMEOUT=10\nDNS_SYNC_SERVERS='127.0.0.1#{port}'\n{extra}",
                port = self.port,
                key = key.display()
            ),
        )
        .expect("write config");
        config
    }

    fn hook(&self, config: &Path, args: &[String]) -> HookRun {
        run_hook(
            &script("nsupdate"),
            args,
            &[("ACME_DNS_CONFIG", config.to_string_lossy().into_owned())],
        )
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- knotd log -----\n{}\n---------------------",
                self.log()
            );
        }
    }
}

#[test]
fn nsupdate_hook_adds_and_deletes_exactly_its_txt_value() {
    if !tools_installed(
        "nsupdate_hook_adds_and_deletes_exactly_its_txt_value",
        NSUPDATE_TOOLS,
    ) {
        return;
    }
    let knot = Knot::start();
    let config = knot.config(TSIG_SECRET, "ZONE=example.test\n");
    assert_eq!(knot.txt(A_REC), ["admin-static-value"]);

    let run = knot.hook(
        &config,
        &dns_args("challenge-dns-start", "a.example.test", V1, ""),
    );
    run.assert_code(0);
    // Visible as soon as the hook returns (it waited for the sync server).
    assert_eq!(knot.txt(A_REC), [V1, "admin-static-value"]);
    let ttl = Command::new(tool("dig"))
        .args([
            "+noall",
            "+answer",
            "-p",
            &knot.port.to_string(),
            "@127.0.0.1",
            "TXT",
            A_REC,
        ])
        .output()
        .expect("dig");
    let answers: Vec<String> = String::from_utf8_lossy(&ttl.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        answers.contains(&format!("{A_REC}. 90 IN TXT \"{V1}\"")),
        "{answers:?}"
    );

    // The wildcard authorization of the same base name: "*." is dropped, values coexist.
    knot.hook(
        &config,
        &dns_args("challenge-dns-start", "*.a.example.test", V2, "wildcard"),
    )
    .assert_code(0);
    let mut both = vec![V1, V2, "admin-static-value"];
    both.sort();
    assert_eq!(knot.txt(A_REC), both);
    // Nothing appeared at the literal wildcard name.
    assert!(knot.txt("_acme-challenge.*.a.example.test").is_empty());

    // stop deletes exactly its value.
    knot.hook(
        &config,
        &dns_args("challenge-dns-stop", "a.example.test", V1, ""),
    )
    .assert_code(0);
    let mut rest = vec![V2, "admin-static-value"];
    rest.sort();
    assert_eq!(knot.txt(A_REC), rest);
    knot.hook(
        &config,
        &dns_args("challenge-dns-stop", "*.a.example.test", V2, "wildcard"),
    )
    .assert_code(0);
    assert_eq!(knot.txt(A_REC), ["admin-static-value"]);

    // Other events are not handled.
    knot.hook(&config, &["live-updated".to_owned()])
        .assert_code(42);
    knot.hook(&config, &[]).assert_code(42);
}

#[test]
fn nsupdate_hook_refuses_hostile_arguments() {
    if !tools_installed("nsupdate_hook_refuses_hostile_arguments", NSUPDATE_TOOLS) {
        return;
    }
    let knot = Knot::start();
    let config = knot.config(TSIG_SECRET, "");
    let canary = knot.dir.path().join("canary");
    let serial = knot.soa_serial().expect("serial");
    for (what, args) in hostile_args(&canary) {
        for event in ["challenge-dns-start", "challenge-dns-stop"] {
            let run = knot.hook(&config, &with_event(event, &args));
            run.assert_code(1);
            assert!(
                run.stderr.contains("nsupdate: "),
                "{what}: {}",
                run.describe()
            );
            assert!(!canary.exists(), "{what}: a command ran");
        }
    }
    // No update reached the server.
    assert_eq!(
        knot.soa_serial().as_deref(),
        Some(serial.as_str()),
        "{}",
        knot.log()
    );
    assert_eq!(knot.txt(A_REC), ["admin-static-value"]);

    // Settings that would inject into nsupdate's input are refused too.
    let bad = knot.config(
        TSIG_SECRET,
        "ZONE='example.test\nupdate delete example.test. A'\n",
    );
    knot.hook(
        &bad,
        &dns_args("challenge-dns-start", "a.example.test", V1, ""),
    )
    .assert_code(1);
    assert_eq!(knot.soa_serial().as_deref(), Some(serial.as_str()));
}

#[test]
fn nsupdate_hook_fails_with_a_wrong_tsig_key() {
    if !tools_installed("nsupdate_hook_fails_with_a_wrong_tsig_key", NSUPDATE_TOOLS) {
        return;
    }
    let knot = Knot::start();
    let config = knot.config(WRONG_SECRET, "");
    let run = knot.hook(
        &config,
        &dns_args("challenge-dns-start", "a.example.test", V1, ""),
    );
    run.assert_code(1);
    assert!(run.stderr.contains("nsupdate failed"), "{}", run.describe());
    assert_eq!(knot.txt(A_REC), ["admin-static-value"]);
}

#[test]
fn nsupdate_hook_deletes_the_record_when_a_server_never_serves_it() {
    if !tools_installed(
        "nsupdate_hook_deletes_the_record_when_a_server_never_serves_it",
        NSUPDATE_TOOLS,
    ) {
        return;
    }
    let knot = Knot::start();
    // A second "name server" that answers nothing: nothing listens on this port.
    let dead = free_port_with(true);
    let config = knot.config(
        TSIG_SECRET,
        &format!(
            "DNS_SYNC_TIMEOUT=3\nDNS_SYNC_SERVERS='127.0.0.1#{} 127.0.0.1#{dead}'\n",
            knot.port
        ),
    );
    let started = Instant::now();
    let run = knot.hook(
        &config,
        &dns_args("challenge-dns-start", "a.example.test", V1, ""),
    );
    run.assert_code(1);
    assert!(run.stderr.contains("timed out"), "{}", run.describe());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // It cleaned up after itself.
    assert_eq!(knot.txt(A_REC), ["admin-static-value"]);
}
