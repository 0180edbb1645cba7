//! A temporary acmekeep state directory, and the standard test configuration.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Pebble, acmekeep};

/// YAML double-quoted scalar (JSON string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

/// The standard `conf/target` for tests: the Pebble directory and CA bundle, the built-in
/// listener on Pebble's http-01 port only, no default listeners (:80, 402, 4402), no default
/// webroot (/var/run/acme/acme-challenge), no self-test.
pub fn standard_conf_target(pebble: &Pebble) -> String {
    format!(
        "request:\n  provider: {}\n  provider-ca-bundle: {}\n  challenge:\n    http-ports:\n    - {}\n    default-listeners: false\n    default-webroot: \"\"\n    http-self-test: false\n",
        yaml_str(&pebble.directory_url()),
        yaml_str(&pebble.ca_bundle_path().to_string_lossy()),
        yaml_str(&format!("127.0.0.1:{}", pebble.http_port())),
    )
}

/// A `conf/target` for the webroot method: no listener at all, challenge files are written
/// into `webroot` (which some web server must serve on Pebble's http-01 port).
pub fn webroot_conf_target(pebble: &Pebble, webroot: &Path) -> String {
    format!(
        "request:\n  provider: {}\n  provider-ca-bundle: {}\n  challenge:\n    webroot-paths:\n    - {}\n    default-listeners: false\n    default-webroot: \"\"\n    http-self-test: false\n",
        yaml_str(&pebble.directory_url()),
        yaml_str(&pebble.ca_bundle_path().to_string_lossy()),
        yaml_str(&webroot.to_string_lossy()),
    )
}

/// `conf/responses` agreeing to `tos_url` and giving a contact address.
pub fn responses_yaml(tos_url: &str) -> String {
    format!(
        "{}: true\nacme-enter-email: \"test@example.org\"\n",
        yaml_str(&format!("acme-agreement:{tos_url}"))
    )
}

/// A state directory `<tmp>/state` inside a fresh temporary directory; `<tmp>` also has room
/// for sibling directories ([`StateDir::scratch_dir`]). Deleted on drop unless the
/// environment variable `ACMEKEEP_TEST_KEEP` is set; if the thread is panicking, a listing
/// of the tree is printed first.
pub struct StateDir {
    root: Option<tempfile::TempDir>,
    state: PathBuf,
}

impl std::fmt::Debug for StateDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDir")
            .field("state", &self.state)
            .finish()
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

impl StateDir {
    /// A new, empty state directory (only `conf/` exists).
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("acmekeep-test-")
            .tempdir()
            .expect("create temporary directory");
        let state = root.path().join("state");
        fs::create_dir_all(state.join("conf")).expect("create state/conf");
        StateDir {
            root: Some(root),
            state,
        }
    }

    /// A state directory with [`standard_conf_target`] and [`responses_yaml`] written.
    pub fn standard(pebble: &Pebble) -> Self {
        let s = Self::new();
        s.write_conf_target(&standard_conf_target(pebble));
        s.write_standard_responses();
        s
    }

    /// The state directory (what `--state` gets).
    /// The test's hook directory, beside the state directory (created on demand by tests
    /// that install hooks).
    pub fn hooks_dir(&self) -> PathBuf {
        self.path()
            .parent()
            .map(|p| p.join("hooks"))
            .unwrap_or_else(|| self.path().join("../hooks"))
    }

    pub fn path(&self) -> &Path {
        &self.state
    }

    /// `<state>/<rel>`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.state.join(rel)
    }

    /// A directory `<tmp>/<name>` next to the state directory (created if missing).
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let dir = self.state.parent().expect("state has a parent").join(name);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    /// Writes `<state>/<rel>`, creating parent directories.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent directory");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    pub fn write_conf_target(&self, yaml: &str) {
        self.write("conf/target", yaml);
    }

    pub fn write_responses(&self, yaml: &str) {
        self.write("conf/responses", yaml);
    }

    /// Responses for Pebble 2.4 (its fixed ToS URL, see [`Pebble::terms_of_service`]).
    pub fn write_standard_responses(&self) {
        self.write_responses(&responses_yaml(PEBBLE_TOS));
    }

    /// Writes a target file `desired/<file>`.
    pub fn write_desired(&self, file: &str, yaml: &str) {
        self.write(Path::new("desired").join(file), yaml);
    }

    /// Reads `<state>/<rel>` (panics if missing).
    pub fn read(&self, rel: impl AsRef<Path>) -> Vec<u8> {
        let path = self.join(rel);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    pub fn read_string(&self, rel: impl AsRef<Path>) -> String {
        String::from_utf8(self.read(rel)).expect("UTF-8 file")
    }

    /// Names of the entries of `<state>/<rel>`, sorted, hidden ones skipped; empty if missing.
    pub fn list(&self, rel: impl AsRef<Path>) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.join(rel)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .map(|e| {
                e.expect("read_dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Target files in `desired/`.
    pub fn desired_files(&self) -> Vec<String> {
        self.list("desired")
    }

    /// The file under `desired/` that `want NAME` wrote for `name` (`<name>-<suffix>`).
    pub fn desired_file_for(&self, name: &str) -> String {
        let prefix = format!("{name}-");
        self.desired_files()
            .into_iter()
            .find(|f| f.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no desired/{prefix}*\n{}", self.tree()))
    }

    /// Certificate IDs in `certs/`.
    pub fn cert_ids(&self) -> Vec<String> {
        self.list("certs")
    }

    /// Key IDs in `keys/`.
    pub fn key_ids(&self) -> Vec<String> {
        self.list("keys")
    }

    /// Account directories as `<urlpart>/<account key id>`.
    pub fn account_ids(&self) -> Vec<String> {
        self.list("accounts")
            .into_iter()
            .flat_map(|urlpart| {
                self.list(Path::new("accounts").join(&urlpart))
                    .into_iter()
                    .map(move |id| format!("{urlpart}/{id}"))
            })
            .collect()
    }

    /// Names in `live/`.
    pub fn live_names(&self) -> Vec<String> {
        self.list("live")
    }

    /// The target of the `live/<name>` symlink, if it is one.
    pub fn live_link(&self, name: &str) -> Option<PathBuf> {
        fs::read_link(self.join("live").join(name)).ok()
    }

    /// The certificate ID `live/<name>` points at (asserts the `../certs/<id>` form).
    pub fn live_cert_id(&self, name: &str) -> String {
        let target = self
            .live_link(name)
            .unwrap_or_else(|| panic!("live/{name} is not a symlink\n{}", self.tree()));
        let target = target.to_string_lossy().into_owned();
        target
            .strip_prefix("../certs/")
            .unwrap_or_else(|| panic!("live/{name} -> {target}: expected ../certs/<id>"))
            .to_owned()
    }

    /// Reads `live/<name>/<file>` (cert, chain, fullchain, privkey) through the symlinks.
    /// Moves the Retry-After of the cached renewal window of certificate `cert_id` into the
    /// past, as if its time had come: the next run asks the CA again. (The window is asked
    /// for right after issuance, RFC 9773 §4.2, so a window a test sets afterwards is seen
    /// only once the cached one's Retry-After has passed.)
    /// A backoff after answers that could not be used (`.acmekeep/ari/<id>.backoff`) is
    /// ended too.
    pub fn retry_after_passed(&self, cert_id: &str) {
        let path = format!(".acmekeep/ari/{cert_id}.json");
        let backoff = self.join(format!(".acmekeep/ari/{cert_id}.backoff"));
        let had_backoff = std::fs::remove_file(&backoff).is_ok();
        if !self.join(&path).exists() {
            assert!(had_backoff, "no renewal window nor backoff for {cert_id}");
            return;
        }
        let mut rec: serde_json::Value =
            serde_json::from_slice(&self.read(&path)).expect("cached renewal window");
        rec["retry_after_until"] = "2000-01-01T00:00:00Z".into();
        self.write(&path, serde_json::to_vec(&rec).expect("JSON"));
    }

    pub fn read_live(&self, name: &str, file: &str) -> Vec<u8> {
        self.read(Path::new("live").join(name).join(file))
    }

    /// Mode bits (`& 0o7777`) of `<state>/<rel>`, not following a final symlink.
    pub fn mode(&self, rel: impl AsRef<Path>) -> u32 {
        let path = self.join(rel);
        fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o7777
    }

    /// A recursive listing (`path -> link target` for symlinks, mode for the rest),
    /// for failure messages.
    pub fn tree(&self) -> String {
        fn walk(base: &Path, dir: &Path, out: &mut String) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let path = e.path();
                let rel = path
                    .strip_prefix(base)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&path).map(|t| t.display().to_string());
                    out.push_str(&format!("  {rel} -> {}\n", target.unwrap_or_default()));
                } else if meta.is_dir() {
                    out.push_str(&format!(
                        "  {rel}/ ({:o})\n",
                        meta.permissions().mode() & 0o7777
                    ));
                    walk(base, &path, out);
                } else {
                    out.push_str(&format!(
                        "  {rel} ({:o}, {} bytes)\n",
                        meta.permissions().mode() & 0o7777,
                        meta.len()
                    ));
                }
            }
        }
        let mut out = format!("state directory {}:\n", self.state.display());
        walk(&self.state, &self.state, &mut out);
        out
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.tree());
        }
        if std::env::var_os("ACMEKEEP_TEST_KEEP").is_some()
            && let Some(root) = self.root.take()
        {
            let kept = root.keep();
            eprintln!("ACMEKEEP_TEST_KEEP: kept {}", kept.display());
        }
    }
}

/// Pebble 2.4's `meta.termsOfService` (a constant in its WFE; checked by the harness self-test).
pub const PEBBLE_TOS: &str = "data:text/plain,Do%20what%20thou%20wilt";

/// `status --json`, parsed.
pub fn status_json(state: &StateDir) -> serde_json::Value {
    let run = acmekeep(state, &["status", "--json"]);
    run.assert_success();
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON: {e}\n{}", run.describe()))
}

/// The `targets[]` entry of `status --json` for `desired/<file>`.
pub fn target_status<'a>(doc: &'a serde_json::Value, file: &str) -> &'a serde_json::Value {
    doc["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("status --json has no targets array: {doc:#}"))
        .iter()
        .find(|t| t["file"] == file)
        .unwrap_or_else(|| panic!("status --json lists no target {file}: {doc:#}"))
}

/// acmekeep's run record `.acmekeep/targets/<file>.json`.
pub fn run_record(state: &StateDir, file: &str) -> serde_json::Value {
    let rel = Path::new(".acmekeep/targets").join(format!("{file}.json"));
    serde_json::from_slice(&state.read(&rel))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", rel.display()))
}
