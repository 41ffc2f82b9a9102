//! `nftmesh cni install` and `nftmesh cni uninstall`: chain `nftmesh-cni` into a node's CNI
//! configuration the way istio-cni's installer does, and take it out again.
//!
//! Followed from istio/istio at 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c,
//! `cni/pkg/install/cniconfig.go` (`getConfigFilenames`, `insertCNIConfig`, `writeCNIConfig`)
//! and `install.go` (`Cleanup`, `sleepWatchInstall`, `checkValidCNIConfig`):
//! - the primary configuration is the lexically first `*.conf`/`*.conflist` of the conf dir;
//! - our plugin entry loses its `cniVersion` (the list's governs) and goes last in `plugins`;
//! - a `.conf` becomes a list holding the conf minus `cniVersion`, written as `NAME.conflist`,
//!   and the `.conf` is gone (Istio writes the list into the `.conf` and renames it; we write
//!   the `.conflist` first and then remove the `.conf`, so no runtime ever reads a list from a
//!   `.conf`);
//! - the file is rewritten atomically keeping its mode, and only when its bytes would change;
//! - `--watch` re-checks on every change in the conf dir (istio#55968: the primary plugin
//!   rewrote the file without our entry) and cleans up on SIGTERM.
//!
//! Where we differ, and why: a converted `.conf` keeps its own `name` and `cniVersion` at the
//! list level (Istio writes `k8s-pod-network` and `0.3.1`, which renames the network and may
//! downgrade the spec version); an existing entry of ours is replaced where it stands (Istio
//! moves it last); a primary file that does not parse is refused (Istio skips to the next);
//! uninstall restores the original bytes from a backup written at install (Istio re-serializes,
//! which loses the file's formatting and key order).

use crate::error::CliError;
use serde_json::{Map, Value};
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The plugin's `type`, and its binary's name in the bin dir.
pub const PLUGIN_TYPE: &str = "nftmesh-cni";

/// The backup of a file's original bytes, written at install: `.nftmesh-cni.NAME.orig` (hidden,
/// and with an extension no runtime loads).
fn backup_name(original: &str) -> String {
    format!(".{PLUGIN_TYPE}.{original}.orig")
}

/// The original file name a backup name stands for.
fn original_of_backup(backup: &str) -> Option<&str> {
    backup
        .strip_prefix(&format!(".{PLUGIN_TYPE}."))?
        .strip_suffix(".orig")
}

/// `nftmesh cni ...`
#[derive(clap::Subcommand)]
pub enum CniCommand {
    /// Copy nftmesh-cni into the bin dir and chain it last into the runtime's primary CNI
    /// configuration (the lexically first .conflist/.conf of the conf dir).
    Install(InstallArgs),
    /// Take nftmesh-cni out of the CNI configuration again (restoring the file's original
    /// bytes) and remove its binary.
    Uninstall(UninstallArgs),
}

/// `nftmesh cni install`: where, what, and whether to keep watching.
#[derive(clap::Args)]
pub struct InstallArgs {
    /// The runtime's CNI configuration directory (e.g. /etc/cni/net.d).
    #[arg(long, value_name = "DIR")]
    pub conf_dir: PathBuf,
    /// The runtime's CNI plugin directory (e.g. /opt/cni/bin); it must exist.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// The nftmesh-cni binary to copy into the bin dir (as `nftmesh-cni`, mode 0755).
    #[arg(long, value_name = "PATH")]
    pub plugin_binary: PathBuf,
    /// A JSON object: nftmesh-cni's entry in `plugins` (its `type` is set if absent).
    #[arg(long, value_name = "FILE")]
    pub plugin_config: PathBuf,
    /// Leave the primary file alone and write our own conflist NAME (the primary's plugins
    /// plus ours); NAME must end in .conflist and sort before the primary.
    #[arg(long, value_name = "NAME")]
    pub own_file: Option<String>,
    /// Keep running: re-insert whenever the conf dir changes without our entry; uninstall and
    /// exit 0 on SIGTERM or SIGINT.
    #[arg(long)]
    pub watch: bool,
}

/// `nftmesh cni uninstall`: where.
#[derive(clap::Args)]
pub struct UninstallArgs {
    /// The runtime's CNI configuration directory.
    #[arg(long, value_name = "DIR")]
    pub conf_dir: PathBuf,
    /// The runtime's CNI plugin directory.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// The conflist `install --own-file NAME` wrote: it is deleted.
    #[arg(long, value_name = "NAME")]
    pub own_file: Option<String>,
}

/// Why an install or uninstall was refused (nothing was changed) or failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CniInstallError {
    /// The conf dir holds no `*.conf` or `*.conflist` (hidden files aside).
    NoPrimary {
        /// The conf dir.
        conf_dir: PathBuf,
    },
    /// A file is not JSON: where it stops parsing.
    Parse {
        /// The file.
        file: PathBuf,
        /// The line where it stops parsing (from 1).
        line: usize,
        /// The column there (from 1).
        column: usize,
        /// serde_json's message.
        message: String,
    },
    /// A file is JSON but not a CNI configuration (or plugin entry) of the kind expected.
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// The plugin config names another plugin type than nftmesh-cni.
    ForeignType {
        /// The plugin config.
        file: PathBuf,
        /// Its `type`.
        found: Value,
    },
    /// The bin dir does not exist (or is not a directory).
    BinDirMissing {
        /// The bin dir.
        bin_dir: PathBuf,
    },
    /// `--own-file` is not a usable name, or would not be picked before the primary.
    OwnFile {
        /// The name given.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Converting NAME.conf would overwrite a NAME.conflist that is not ours.
    ConflistExists {
        /// The NAME.conflist.
        file: PathBuf,
    },
    /// Reading or writing a file failed.
    Io {
        /// The file.
        file: PathBuf,
        /// What was being done (`read`, `stat`, `atomic write`, ...).
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for CniInstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPrimary { conf_dir } => write!(
                f,
                "{}: no primary CNI configuration (no *.conf or *.conflist file)",
                conf_dir.display()
            ),
            Self::Parse {
                file,
                line,
                column,
                message,
            } => {
                write!(f, "{}:{line}:{column}: not JSON: {message}", file.display())
            }
            Self::Invalid { file, reason } => write!(f, "{}: {reason}", file.display()),
            Self::ForeignType { file, found } => write!(
                f,
                "{}: plugin type is {found}, not \"{PLUGIN_TYPE}\"",
                file.display()
            ),
            Self::BinDirMissing { bin_dir } => {
                write!(f, "{}: bin dir does not exist", bin_dir.display())
            }
            Self::OwnFile { name, reason } => write!(f, "--own-file {name}: {reason}"),
            Self::ConflistExists { file } => write!(
                f,
                "{}: exists and is not ours; refusing to overwrite it with the converted .conf",
                file.display()
            ),
            Self::Io { file, op, source } => write!(f, "{}: {op}: {source}", file.display()),
        }
    }
}

impl std::error::Error for CniInstallError {}

type Result<T> = std::result::Result<T, CniInstallError>;

fn io_err(file: &Path, op: &'static str) -> impl FnOnce(io::Error) -> CniInstallError {
    let file = file.to_path_buf();
    move |source| CniInstallError::Io { file, op, source }
}

/// A file's permission bits and owner, kept across an atomic rewrite.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Perm {
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Perm {
    fn of(path: &Path) -> Result<Perm> {
        let m = fs::metadata(path).map_err(io_err(path, "stat"))?;
        Ok(Perm {
            mode: m.permissions().mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        })
    }
}

/// One change to the file system; a plan is computed (reading only) and then applied.
#[derive(Debug)]
enum Action {
    Write {
        path: PathBuf,
        bytes: Vec<u8>,
        perm: Option<Perm>,
        mode: u32,
    },
    Remove(PathBuf),
}

/// Write `bytes` to `path` atomically: a hidden temp file in the same dir, fsync, mode (and
/// owner, when `perm` names another), rename, fsync of the dir.
fn atomic_write(path: &Path, bytes: &[u8], mode: u32, perm: Option<Perm>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.nftmesh-tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(p) = perm {
            let m = f.metadata()?;
            if (m.uid(), m.gid()) != (p.uid, p.gid) {
                std::os::unix::fs::fchown(&f, Some(p.uid), Some(p.gid))?;
            }
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io_err(path, "atomic write"))
}

fn apply(actions: Vec<Action>) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for a in actions {
        match a {
            Action::Write {
                path,
                bytes,
                perm,
                mode,
            } => {
                atomic_write(&path, &bytes, perm.map_or(mode, |p| p.mode), perm)?;
                done.push(format!("wrote {}", path.display()));
            }
            Action::Remove(path) => {
                fs::remove_file(&path).map_err(io_err(&path, "remove"))?;
                done.push(format!("removed {}", path.display()));
            }
        }
    }
    Ok(done)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io_err(path, "read"))
}

/// Parse a file as a JSON object, naming line and column when it is not JSON.
fn parse_object(file: &Path, bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CniInstallError::Invalid {
            file: file.to_path_buf(),
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(CniInstallError::Parse {
            file: file.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        }),
    }
}

/// Our plugin entry from `--plugin-config`: an object whose `type` is nftmesh-cni (set when
/// absent), without `cniVersion` (as Istio's `insertCNIConfig`).
pub fn load_entry(file: &Path) -> Result<Map<String, Value>> {
    let mut entry = parse_object(file, &read(file)?)?;
    match entry.get("type") {
        None => {
            entry.insert("type".into(), Value::from(PLUGIN_TYPE));
        }
        Some(Value::String(t)) if t == PLUGIN_TYPE => {}
        Some(other) => {
            return Err(CniInstallError::ForeignType {
                file: file.into(),
                found: other.clone(),
            })
        }
    }
    entry.remove("cniVersion");
    Ok(entry)
}

/// The names of the conf dir's configuration files, sorted: `*.conf` and `*.conflist`, hidden
/// files left out (`skip` too).
fn config_names(conf_dir: &Path, skip: Option<&str>) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(conf_dir).map_err(io_err(conf_dir, "read dir"))? {
        let e = e.map_err(io_err(conf_dir, "read dir"))?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let is_conf = name.ends_with(".conf") || name.ends_with(".conflist");
        if is_conf && !name.starts_with('.') && Some(name.as_str()) != skip && e.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The runtime's primary configuration: the lexically first config file.
pub fn find_primary(conf_dir: &Path, skip: Option<&str>) -> Result<String> {
    config_names(conf_dir, skip)?
        .into_iter()
        .next()
        .ok_or_else(|| CniInstallError::NoPrimary {
            conf_dir: conf_dir.into(),
        })
}

/// A parsed config file as a conflist: a `.conf` becomes `{cniVersion, name, plugins: [the
/// conf minus cniVersion]}`; a `.conflist` must have a non-empty `plugins` array of objects.
pub fn as_list(file: &Path, mut map: Map<String, Value>) -> Result<Map<String, Value>> {
    let invalid = |reason: &str| CniInstallError::Invalid {
        file: file.into(),
        reason: reason.into(),
    };
    if file.extension().is_some_and(|e| e == "conf") {
        if !map.get("type").is_some_and(Value::is_string) {
            return Err(invalid(
                "a .conf without a \"type\" (a conflist under a .conf name?)",
            ));
        }
        let mut list = Map::new();
        for key in ["cniVersion", "name"] {
            if let Some(v) = map.get(key) {
                list.insert(key.into(), v.clone());
            }
        }
        map.remove("cniVersion");
        list.insert("plugins".into(), Value::Array(vec![Value::Object(map)]));
        return Ok(list);
    }
    match map.get("plugins") {
        Some(Value::Array(p)) if p.is_empty() => Err(invalid("\"plugins\" is empty")),
        Some(Value::Array(p)) if p.iter().all(Value::is_object) => Ok(map),
        Some(Value::Array(_)) => Err(invalid("an entry of \"plugins\" is not an object")),
        _ => Err(invalid("no \"plugins\" array")),
    }
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

fn plugins_mut(list: &mut Map<String, Value>) -> &mut Vec<Value> {
    if !matches!(list.get("plugins"), Some(Value::Array(_))) {
        list.insert("plugins".into(), Value::Array(Vec::new()));
    }
    match list.get_mut("plugins") {
        Some(Value::Array(p)) => p,
        _ => unreachable!("just inserted"),
    }
}

/// Whether a conflist holds an entry of ours.
pub fn has_entry(list: &Map<String, Value>) -> bool {
    list.get("plugins")
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().any(is_ours))
}

/// Put our entry in: in place of the first existing entry of ours (others dropped), else last.
pub fn insert_entry(list: &mut Map<String, Value>, entry: &Map<String, Value>) {
    let plugins = plugins_mut(list);
    match plugins.iter().position(is_ours) {
        Some(i) => {
            plugins[i] = Value::Object(entry.clone());
            let mut n = 0;
            plugins.retain(|p| {
                n += 1;
                n - 1 <= i || !is_ours(p)
            });
        }
        None => plugins.push(Value::Object(entry.clone())),
    }
}

/// Take every entry of ours out; how many there were.
pub fn remove_entries(list: &mut Map<String, Value>) -> usize {
    let plugins = plugins_mut(list);
    let before = plugins.len();
    plugins.retain(|p| !is_ours(p));
    before - plugins.len()
}

/// A conflist as written: two-space indented JSON and a newline (as Istio's `MarshalCNIConfig`).
pub fn render(list: &Map<String, Value>) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(list).unwrap_or_default();
    out.push(b'\n');
    out
}

fn read_list(file: &Path) -> Result<(Vec<u8>, Map<String, Value>)> {
    let bytes = read(file)?;
    let list = as_list(file, parse_object(file, &bytes)?)?;
    Ok((bytes, list))
}

fn check_bin_dir(bin_dir: &Path) -> Result<()> {
    if bin_dir.is_dir() {
        Ok(())
    } else {
        Err(CniInstallError::BinDirMissing {
            bin_dir: bin_dir.into(),
        })
    }
}

fn check_own_name(name: &str) -> Result<()> {
    let bad = |reason: &str| CniInstallError::OwnFile {
        name: name.into(),
        reason: reason.into(),
    };
    if name.contains('/') || name.starts_with('.') {
        return Err(bad("must be a plain, not hidden, file name"));
    }
    if !name.ends_with(".conflist") {
        return Err(bad("must end in .conflist"));
    }
    Ok(())
}

/// What `install` needs, all validated.
pub struct Install {
    /// The CNI conf dir.
    pub conf_dir: PathBuf,
    /// The CNI bin dir.
    pub bin_dir: PathBuf,
    /// The binary copied in as `nftmesh-cni`.
    pub plugin_binary: PathBuf,
    /// Our plugin entry (see [`load_entry`]).
    pub entry: Map<String, Value>,
    /// `--own-file`.
    pub own_file: Option<String>,
}

/// The changes an install makes, computed by reading only; empty when all is in place.
fn plan_install(i: &Install) -> Result<Vec<Action>> {
    check_bin_dir(&i.bin_dir)?;
    let binary = read(&i.plugin_binary)?;
    let mut actions = Vec::new();
    let bin_path = i.bin_dir.join(PLUGIN_TYPE);
    let bin_in_place = fs::metadata(&bin_path)
        .is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o755)
        && fs::read(&bin_path).is_ok_and(|b| b == binary);
    if !bin_in_place {
        actions.push(Action::Write {
            path: bin_path,
            bytes: binary,
            perm: None,
            mode: 0o755,
        });
    }
    if let Some(own) = &i.own_file {
        check_own_name(own)?;
    }
    let primary = find_primary(&i.conf_dir, i.own_file.as_deref())?;
    if let Some(own) = i.own_file.as_deref().filter(|own| **own >= *primary) {
        return Err(CniInstallError::OwnFile {
            name: own.into(),
            reason: format!("sorts after the primary {primary}, so the runtime would not pick it"),
        });
    }
    let primary_path = i.conf_dir.join(&primary);
    let (bytes, mut list) = read_list(&primary_path)?;
    let had_entry = has_entry(&list);
    insert_entry(&mut list, &i.entry);
    let new = render(&list);
    let perm = Some(Perm::of(&primary_path)?);
    let target = match &i.own_file {
        Some(own) => i.conf_dir.join(own),
        None if primary.ends_with(".conf") => {
            let target = i.conf_dir.join(format!("{primary}list"));
            if target.exists() && !read_list(&target).is_ok_and(|(_, l)| has_entry(&l)) {
                return Err(CniInstallError::ConflistExists { file: target });
            }
            target
        }
        None => primary_path.clone(),
    };
    if i.own_file.is_none() && !had_entry {
        let path = i.conf_dir.join(backup_name(&primary));
        actions.push(Action::Write {
            path,
            bytes,
            perm: None,
            mode: 0o600,
        });
    }
    if fs::read(&target).ok().as_ref() != Some(&new) || Perm::of(&target).ok() != perm {
        actions.push(Action::Write {
            path: target.clone(),
            bytes: new,
            perm,
            mode: 0o644,
        });
    }
    if target != primary_path && i.own_file.is_none() {
        actions.push(Action::Remove(primary_path));
    }
    Ok(actions)
}

/// Install (or check and repair): returns what was changed.
pub fn install(i: &Install) -> Result<Vec<String>> {
    apply(plan_install(i)?)
}

/// The changes an uninstall makes, computed by reading only.
fn plan_uninstall(conf_dir: &Path, bin_dir: &Path, own_file: Option<&str>) -> Result<Vec<Action>> {
    check_bin_dir(bin_dir)?;
    let mut actions = Vec::new();
    if let Some(own) = own_file {
        check_own_name(own)?;
        let path = conf_dir.join(own);
        if path.exists() {
            actions.push(Action::Remove(path));
        }
    } else {
        plan_restore(conf_dir, &mut actions)?;
    }
    let bin = bin_dir.join(PLUGIN_TYPE);
    if bin.exists() {
        actions.push(Action::Remove(bin));
    }
    Ok(actions)
}

/// Every file install edited (named by a backup) restored: the original bytes when the file
/// without our entry is the original, else the file re-serialized without our entry; then the
/// primary, if it still holds an entry of ours and had no backup.
fn plan_restore(conf_dir: &Path, actions: &mut Vec<Action>) -> Result<()> {
    let mut handled = Vec::new();
    let mut entries: Vec<String> = fs::read_dir(conf_dir)
        .map_err(io_err(conf_dir, "read dir"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    entries.sort();
    for backup in &entries {
        let Some(original) = original_of_backup(backup) else {
            continue;
        };
        let backup_path = conf_dir.join(backup);
        let original_path = conf_dir.join(original);
        let current = if original.ends_with(".conf") {
            format!("{original}list")
        } else {
            original.into()
        };
        let current_path = conf_dir.join(&current);
        handled.push(current.clone());
        if current != original && original_path.exists() {
            // The .conf came back (rewritten by its owner): the .conflist we made is stale.
            if read_list(&current_path).is_ok_and(|(_, l)| has_entry(&l)) {
                actions.push(Action::Remove(current_path));
            }
        } else if current_path.exists() {
            let (_, mut list) = read_list(&current_path)?;
            if remove_entries(&mut list) > 0 {
                let orig_bytes = read(&backup_path)?;
                let perm = Some(Perm::of(&current_path)?);
                let same = parse_object(&original_path, &orig_bytes)
                    .and_then(|m| as_list(&original_path, m))
                    .is_ok_and(|orig| orig == list);
                if same {
                    let path = original_path.clone();
                    actions.push(Action::Write {
                        path,
                        bytes: orig_bytes,
                        perm,
                        mode: 0o644,
                    });
                    if current_path != original_path {
                        actions.push(Action::Remove(current_path));
                    }
                } else {
                    let bytes = render(&list);
                    actions.push(Action::Write {
                        path: current_path,
                        bytes,
                        perm,
                        mode: 0o644,
                    });
                }
            }
        }
        actions.push(Action::Remove(backup_path));
    }
    if let Some(primary) = config_names(conf_dir, None)?.into_iter().next() {
        let path = conf_dir.join(&primary);
        if !handled.contains(&primary) && !primary.ends_with(".conf") {
            let (_, mut list) = read_list(&path)?;
            if remove_entries(&mut list) > 0 {
                let perm = Some(Perm::of(&path)?);
                actions.push(Action::Write {
                    path,
                    bytes: render(&list),
                    perm,
                    mode: 0o644,
                });
            }
        }
    }
    Ok(())
}

/// Uninstall: returns what was changed.
pub fn uninstall(conf_dir: &Path, bin_dir: &Path, own_file: Option<&str>) -> Result<Vec<String>> {
    apply(plan_uninstall(conf_dir, bin_dir, own_file)?)
}

enum Event {
    Changed,
    Signal(nix::sys::signal::Signal),
    WatchFailed(nix::Error),
}

/// `--watch`: after the install, re-check on every change in the conf dir (and once a second,
/// the safety net) and repair; on SIGTERM/SIGINT uninstall and return.
fn watch(i: &Install) -> std::result::Result<(), CliError> {
    use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    // Blocked before any thread starts, so every thread inherits the mask and only sigwait
    // below receives them.
    signals
        .thread_block()
        .map_err(CliError::system("blocking signals"))?;
    let (tx, rx) = mpsc::channel();
    let sig_tx = tx.clone();
    std::thread::spawn(move || loop {
        match signals.wait() {
            Ok(sig) => {
                let _ = sig_tx.send(Event::Signal(sig));
            }
            Err(e) => {
                let _ = sig_tx.send(Event::WatchFailed(e));
                return;
            }
        }
    });
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(CliError::system("inotify"))?;
    let mask = F::IN_CLOSE_WRITE
        | F::IN_CREATE
        | F::IN_DELETE
        | F::IN_MOVED_TO
        | F::IN_MOVED_FROM
        | F::IN_DELETE_SELF
        | F::IN_MOVE_SELF;
    inotify
        .add_watch(&i.conf_dir, mask)
        .map_err(CliError::system(format!(
            "{}: inotify",
            i.conf_dir.display()
        )))?;
    std::thread::spawn(move || loop {
        let event = match inotify.read_events() {
            Ok(_) => Event::Changed,
            Err(e) => Event::WatchFailed(e),
        };
        let failed = matches!(event, Event::WatchFailed(_));
        if tx.send(event).is_err() || failed {
            return;
        }
    });
    eprintln!("nftmesh cni install: watching {}", i.conf_dir.display());
    loop {
        // A change, or a second without one (the periodic re-check); then the burst drained.
        let first = rx.recv_timeout(Duration::from_secs(1));
        let mut stop = None;
        for event in first.into_iter().chain(rx.try_iter()) {
            match event {
                Event::Changed => {}
                Event::Signal(sig) => stop = Some(sig),
                Event::WatchFailed(e) => return Err(CliError::system("watching")(e)),
            }
        }
        if let Some(sig) = stop {
            eprintln!("nftmesh cni install: {sig}: uninstalling");
            let done = uninstall(&i.conf_dir, &i.bin_dir, i.own_file.as_deref())?;
            report("uninstall", &done);
            return Ok(());
        }
        match install(i) {
            Ok(done) => report("install", &done),
            // E.g. the primary caught mid-rewrite by a non-atomic writer: the next event retries.
            Err(e) => eprintln!("nftmesh cni install: {e} (will retry)"),
        }
    }
}

fn report(what: &str, done: &[String]) {
    for line in done {
        eprintln!("nftmesh cni {what}: {line}");
    }
}

/// Run `nftmesh cni ...`: an error (exit 1) when refused or failed.
pub fn run(cmd: CniCommand) -> std::result::Result<(), CliError> {
    match cmd {
        CniCommand::Install(a) => run_install(a),
        CniCommand::Uninstall(a) => {
            let done = uninstall(&a.conf_dir, &a.bin_dir, a.own_file.as_deref())?;
            if done.is_empty() {
                eprintln!("nftmesh cni uninstall: nothing to remove");
            }
            report("uninstall", &done);
            Ok(())
        }
    }
}

fn run_install(a: InstallArgs) -> std::result::Result<(), CliError> {
    let entry = load_entry(&a.plugin_config)?;
    let i = Install {
        conf_dir: a.conf_dir,
        bin_dir: a.bin_dir,
        plugin_binary: a.plugin_binary,
        entry,
        own_file: a.own_file,
    };
    let done = install(&i)?;
    if done.is_empty() {
        eprintln!("nftmesh cni install: already installed");
    }
    report("install", &done);
    if a.watch {
        watch(&i)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn cni_install_insert_appends_last_or_replaces_in_place() {
        let entry = obj(json!({"type": PLUGIN_TYPE, "v": 2}));
        let mut list = obj(json!({"plugins": [{"type": "ptp"}, {"type": "portmap"}]}));
        insert_entry(&mut list, &entry);
        assert_eq!(list["plugins"][2], json!({"type": PLUGIN_TYPE, "v": 2}));
        let mut list = obj(json!({"plugins": [
            {"type": "ptp"}, {"type": PLUGIN_TYPE, "v": 1}, {"type": "portmap"},
            {"type": PLUGIN_TYPE, "v": 0}]}));
        insert_entry(&mut list, &entry);
        assert_eq!(
            Value::Object(list),
            json!({"plugins": [{"type": "ptp"}, {"type": PLUGIN_TYPE, "v": 2}, {"type": "portmap"}]})
        );
    }

    #[test]
    fn cni_install_conf_becomes_list_keeping_name_and_version() {
        let conf = obj(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}));
        let list = as_list(Path::new("10-b.conf"), conf).unwrap();
        assert_eq!(
            Value::Object(list),
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"name": "n", "type": "bridge"}]})
        );
        let err = as_list(Path::new("x.conf"), obj(json!({"plugins": []}))).unwrap_err();
        assert!(matches!(err, CniInstallError::Invalid { .. }), "{err}");
        let err = as_list(Path::new("x.conflist"), obj(json!({"plugins": [1]}))).unwrap_err();
        assert!(matches!(err, CniInstallError::Invalid { .. }), "{err}");
    }

    #[test]
    fn cni_install_backup_names_round_trip_and_are_not_loadable() {
        let b = backup_name("10-x.conf");
        assert_eq!(original_of_backup(&b), Some("10-x.conf"));
        assert!(b.starts_with('.') && !b.ends_with(".conf") && !b.ends_with(".conflist"));
    }
}
