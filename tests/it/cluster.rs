//! Fleets through etcd (issue 19): the protocol against a real three-member etcd cluster
//! (Debian's etcd 3.4 on loopback), then acmekeep nodes sharing one Pebble.

use std::path::Path;
use std::time::{Duration, Instant};

use acmekeep::cluster::fleet::{Fleet, Lock, RunLease};
use acmekeep::cluster::kv::{Kv, KvError, Op};
use acmekeep::cluster::seal::ClusterKeys;
use acmekeep::cluster::{ClusterConf, etcd::EtcdKv};
use time::OffsetDateTime;

use crate::support::Etcd;

/// A `conf/cluster` for `etcd` with node name `node` (parsed, not written).
fn conf(etcd: &Etcd, node: &str, extra: &str) -> ClusterConf {
    let endpoints = etcd
        .endpoints()
        .iter()
        .map(|e| format!("  - {e}\n"))
        .collect::<String>();
    acmekeep::cluster::config::parse(
        Path::new("conf/cluster"),
        &format!("endpoints:\n{endpoints}secret-key-file: /nonexistent\nnode: {node}\n{extra}"),
        Path::new("conf"),
        "",
    )
    .expect("conf/cluster")
}

async fn node(etcd: &Etcd, name: &str, key: &str) -> Fleet<EtcdKv> {
    let c = conf(etcd, name, "lock-ttl: 2s\ntimeout: 2s\n");
    let kv = EtcdKv::new(&c).expect("client");
    kv.connect().await.expect("connect");
    Fleet::new(kv, c, ClusterKeys::parse(key).expect("key"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn locks_are_exclusive_and_a_holder_paused_past_its_lease_cannot_overwrite() {
    let etcd = Etcd::start(3);
    runtime().block_on(async {
        let key = ClusterKeys::new_line().expect("key");
        let (a, b) = (node(&etcd, "a", &key).await, node(&etcd, "b", &key).await);
        let now = OffsetDateTime::now_utc();
        // a's lease is never kept alive: a "pauses" right after taking the lock.
        let la = a.kv().grant(Duration::from_secs(2)).await.expect("lease");
        let lb = RunLease::grant(b.kv(), Duration::from_secs(2))
            .await
            .expect("lease");
        let Lock::Held(ha) = a.try_lock("t", la, now).await.expect("lock") else {
            panic!("a should get the free lock");
        };
        match b.try_lock("t", lb.id(), now).await.expect("lock") {
            Lock::Elsewhere(h) => assert_eq!(h.node, "a"),
            Lock::Held(_) => panic!("b took a lock a holds"),
        }
        let head = |n: &str| {
            format!(
                "{{\"cert\":\"{}\",\"at\":\"x\",\"node\":\"{n}\"}}",
                "c".repeat(52)
            )
        };
        assert!(
            a.fenced(&ha, vec![Op::put("/acmekeep/d/heads/t", head("a"))])
                .await
                .expect("fenced write")
        );
        // Past a's TTL: etcd ends its lease and the lock goes with it.
        let started = Instant::now();
        let hb = loop {
            if let Lock::Held(h) = b.try_lock("t", lb.id(), now).await.expect("lock") {
                break h;
            }
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "a's lease never ended"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(hb.token > ha.token, "a new incarnation of the lock");
        assert_eq!(hb.head.as_ref().map(|h| h.node.as_str()), Some("a"));
        assert!(
            b.fenced(&hb, vec![Op::put("/acmekeep/d/heads/t", head("b"))])
                .await
                .expect("fenced write")
        );
        // a resumes and tries to record: refused, b's record stands.
        assert!(
            !a.fenced(&ha, vec![Op::put("/acmekeep/d/heads/t", head("a"))])
                .await
                .expect("fenced write")
        );
        let dumped = etcd.dump("/acmekeep/d/heads/t");
        assert_eq!(dumped.len(), 1);
        assert_eq!(String::from_utf8_lossy(&dumped[0].1), head("b"));
        // a's lease is gone for good: keep-alives say so, and puts bound to it fail.
        assert_eq!(a.kv().keep_alive(la).await, Err(KvError::LeaseGone));
        // b's lease is kept alive by its task well past the TTL.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!lb.lost());
        assert!(matches!(
            a.try_lock("t", la, now).await.expect("lock"),
            Lock::Elsewhere(h) if h.node == "b"
        ));
        // Revoking the run's lease drops every lock at once.
        lb.revoke(b.kv().as_ref()).await;
        assert!(etcd.dump("/acmekeep/x/locks/").is_empty());
    });
}

#[test]
fn one_member_down_works_two_down_is_unavailable_at_once_and_it_recovers() {
    let mut etcd = Etcd::start(3);
    runtime().block_on(async {
        let c = conf(&etcd, "a", "timeout: 2s\n");
        let kv = EtcdKv::new(&c).expect("client");
        kv.connect().await.expect("connect");
        // Whatever member the client chose, stop it: the next call moves to another.
        let first = kv.endpoint().expect("an endpoint");
        let i = etcd
            .endpoints()
            .iter()
            .position(|e| *e == first)
            .expect("known endpoint");
        etcd.stop(i);
        let t = Instant::now();
        kv.txn(vec![], vec![Op::put("/acmekeep/t", "one down")], vec![])
            .await
            .expect("a write with one member down");
        assert_ne!(kv.endpoint().as_deref(), Some(first.as_str()));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Two down: no quorum. Every endpoint's reason, within the retries (2 × timeout).
        let j = (i + 1) % 3;
        etcd.stop(j);
        let t = Instant::now();
        let e = kv
            .txn(vec![], vec![Op::put("/acmekeep/t", "two down")], vec![])
            .await
            .expect_err("no quorum");
        assert!(matches!(e, KvError::Unavailable(_)), "{e:?}");
        let fresh = EtcdKv::new(&c).expect("client");
        let e = fresh.connect().await.expect_err("no quorum");
        let KvError::Unavailable(why) = e else {
            panic!("{e:?}");
        };
        for ep in etcd.endpoints() {
            assert!(why.contains(&ep), "{why}");
        }
        assert!(why.contains("no leader"), "{why}");
        assert!(t.elapsed() < Duration::from_secs(9), "{:?}", t.elapsed());
        // Back: the same client carries on.
        etcd.restart(i);
        etcd.restart(j);
        etcd.wait_leader(Duration::from_secs(20));
        kv.txn(vec![], vec![Op::put("/acmekeep/t", "back")], vec![])
            .await
            .expect("a write after the members returned");
    });
}

/// Makes `state` a node of the fleet in `etcd` (its conf/cluster and secret key file);
/// `key` is the secret key line every node shares.
fn join(state: &crate::support::StateDir, endpoints: &[String], node: &str, key: &str) {
    use std::os::unix::fs::PermissionsExt;
    let list: String = endpoints.iter().map(|e| format!("  - {e}\n")).collect();
    state.write(
        "conf/cluster",
        format!(
            "endpoints:\n{list}node: {node}\nsecret-key-file: cluster.key\nlock-ttl: 2s\ntimeout: 2s\n"
        ),
    );
    let path = state.join("conf/cluster.key");
    std::fs::write(&path, format!("{key}\n")).expect("write the secret key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn cluster_status_names_the_members_and_an_unreachable_cluster_exits_69_with_one_line() {
    use crate::support::{StateDir, acmekeep};
    let etcd = Etcd::start(3);
    let state = StateDir::new();
    let key = acmekeep(&state, &["cluster-key", "new"]);
    key.assert_success();
    let key = key.stdout.trim().to_owned();
    assert_eq!(key.len(), 44, "{}", key);
    join(&state, &etcd.endpoints(), "web1", &key);
    let run = acmekeep(&state, &["cluster-status"]);
    run.assert_success();
    for (i, ep) in etcd.endpoints().iter().enumerate() {
        assert!(
            run.stdout.contains(&format!("m{}", i + 1)) && run.stdout.contains(ep.as_str()),
            "{}",
            run.describe()
        );
    }
    assert!(run.stdout.contains(", leader"), "{}", run.describe());
    assert!(
        run.stdout.contains("no fleet under /acmekeep/ yet"),
        "{}",
        run.describe()
    );
    let json = acmekeep(&state, &["cluster-status", "--json"]);
    json.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(doc["node"], "web1");
    assert_eq!(doc["endpoints"].as_array().map(Vec::len), Some(3));

    // Nothing listens there: exit 69, the cause on one line, nothing else.
    let closed = format!("http://127.0.0.1:{}", crate::support::free_port());
    join(&state, std::slice::from_ref(&closed), "web1", &key);
    let run = acmekeep(&state, &["cluster-status"]);
    run.assert_code(69);
    assert!(run.stdout.contains("UNAVAILABLE"), "{}", run.describe());
    assert!(run.stdout.contains(&closed), "{}", run.describe());

    // A key file others can read is refused, naming it (exit 2).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        state.join("conf/cluster.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    acmekeep(&state, &["cluster-status"])
        .assert_code(2)
        .assert_stderr_contains("cluster.key");
}
