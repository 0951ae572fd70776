//! Configuration while running: `mifsec ctl reload` and SIGHUP (read the file again and
//! apply the difference), `mifsec showconf` (the running configuration in the file's
//! syntax) and `mifsec list-conns` (the loaded connections).
//!
//! The daemon keeps what it last loaded ([`Running`]): the parsed [`Config`] and the
//! [`RunningDoc`], the file as a TOML document to which every `ctl` change is applied as it
//! is made. A reload parses the file first (an error changes nothing and names the file,
//! the line and the key), refuses the parts that only a restart can change (nothing
//! applied then either), and then makes the running state the file's, as `wg syncconf`
//! does: the file wins over `ctl` changes made since.
//!
//! - Interfaces with a fixed address: added, removed, or (address, port or device changed)
//!   closed and opened again; the others are not touched.
//! - Manual SAs: one whose keys, SPIs, selectors, mode, cipher or other settings are the
//!   same keeps running untouched, its paths and policy changed in one table swap (paths
//!   removed, added, given another role, reordered); one whose keys or settings changed is
//!   removed and installed again (resuming above its sequence marks); new ones are
//!   installed, removed ones removed.
//! - Connections, secrets, pools, authorities: a connection whose configuration (with the
//!   secret it takes and its pools) is the same is not touched, nor are its IKE SAs;
//!   otherwise see [`ConnChange`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tracing::{info, warn};

use super::Node;
use super::ike_thread::{ConnChange, IkeHandle, IkePorts};
use crate::config::running::RunningDoc;
use crate::config::{self, Config};
use crate::ctl::Request;
use crate::dataplane::engine::{InterfaceConfig, TableOp};
use crate::dataplane::iproute::Change;
use crate::dataplane::sa_table::Prefix;

/// What the daemon last loaded, with the `ctl` changes made since.
#[derive(Debug)]
pub(super) struct Running {
    /// The configuration file, as `mifsec run --config` named it.
    pub path: PathBuf,
    /// The file as last loaded (parsed).
    pub cfg: Config,
    /// The running configuration as a document.
    pub doc: RunningDoc,
    /// Each connection's [`fingerprint`] as loaded (before any address was leased).
    pub fingerprints: BTreeMap<String, Vec<u8>>,
}

impl Running {
    /// What `path` held when it was loaded as `cfg` and `doc`.
    pub fn new(path: PathBuf, cfg: Config, doc: RunningDoc) -> Running {
        let fingerprints = fingerprints(&cfg);
        Running {
            path,
            cfg,
            doc,
            fingerprints,
        }
    }
}

fn fingerprints(cfg: &Config) -> BTreeMap<String, Vec<u8>> {
    cfg.ike
        .connections
        .iter()
        .map(|c| (c.name.clone(), fingerprint(c)))
        .collect()
}

/// Reads and parses the file; the error names the file, the line and the key.
pub(super) fn load(path: &Path) -> Result<(Config, RunningDoc), String> {
    config::load_running(path).map_err(|e| e.to_string())
}

/// A part of the file that only a restart changes.
fn fixed_sections(old: &RunningDoc, new: &RunningDoc) -> Result<(), String> {
    for s in ["dataplane", "log", "ike"] {
        if old.section(s) != new.section(s) {
            let key = changed_key(old.section(s), new.section(s));
            return Err(format!(
                "{s}{}: changed, and [{s}] is only read at start: restart mifsec for it (nothing was applied)",
                key.map(|k| format!(".{k}")).unwrap_or_default()
            ));
        }
    }
    let followed = |d: &RunningDoc| -> BTreeMap<String, toml::Table> {
        d.section("interfaces")
            .map(|s| {
                s.iter()
                    .filter_map(|(n, v)| Some((n.clone(), v.as_table()?.clone())))
                    .filter(|(_, t)| !t.contains_key("address"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (followed(old), followed(new));
    if a != b {
        let name = a
            .keys()
            .chain(b.keys())
            .find(|n| a.get(*n) != b.get(*n))
            .cloned()
            .unwrap_or_default();
        return Err(format!(
            "interfaces.{name}: an interface that follows its device's addresses is set up at start: restart mifsec for it (nothing was applied)"
        ));
    }
    Ok(())
}

/// The first key whose value differs between two tables.
fn changed_key(a: Option<&toml::Table>, b: Option<&toml::Table>) -> Option<String> {
    let empty = toml::Table::new();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    a.keys()
        .chain(b.keys())
        .find(|k| a.get(*k) != b.get(*k))
        .cloned()
}

/// A configuration of a connection, to see whether it changed: everything but key
/// material as `Debug` shows it, and a digest of the key material (the PSK, our
/// certificates).
fn fingerprint(c: &config::Connection) -> Vec<u8> {
    use crate::ike::auth::{LocalAuth, RemoteAuth};
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    d.update(format!("{c:?}").as_bytes());
    match &c.ike.local_auth {
        LocalAuth::Psk(k) => d.update(k),
        LocalAuth::Pubkey { certs, .. } => certs.iter().for_each(|c| d.update(c)),
        LocalAuth::Eap { secret, tls, .. } => {
            d.update(secret);
            if let Some(t) = tls {
                t.certs.iter().for_each(|c| d.update(c));
            }
        }
    }
    if let RemoteAuth::Psk(k) = &c.ike.remote_auth {
        d.update(k);
    }
    d.finish().as_ref().to_vec()
}

/// The entry's table without the keys listed.
fn without(t: Option<&toml::Table>, keys: &[&str]) -> Option<toml::Table> {
    t.map(|t| {
        t.iter()
            .filter(|(k, _)| !keys.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

fn path_tables(t: Option<&toml::Table>) -> Vec<(String, toml::Table)> {
    t.and_then(|t| t.get("paths"))
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(toml::Value::as_table)
                .map(|p| {
                    let name = p
                        .get("name")
                        .and_then(toml::Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    (name, p.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `ctl reload` and SIGHUP: reads the file again and applies the difference. Returns what
/// changed, a line each (none: the file says what runs already); an error changes nothing
/// (or, for a failure while applying, says what was applied before it).
pub(super) fn reload(node: &mut Node) -> Result<Vec<String>, String> {
    let path = node.running.path.clone();
    let (cfg, doc) = load(&path)?;
    let old_doc = &node.running.doc;
    fixed_sections(old_doc, &doc)?;
    let mut done: Vec<String> = Vec::new();
    let fail = |done: &[String], e: String| {
        if done.is_empty() {
            e
        } else {
            format!("{e} (applied before it: {})", done.join("; "))
        }
    };
    let engine = std::sync::Arc::clone(&node.engine);

    // Interfaces with a fixed address: what the engine has open, by name, against the
    // file's. Followed ones (and their `NAME.N`) are the follower's.
    let followed: Vec<&str> = node
        .running
        .cfg
        .followed
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    let is_followed = |n: &str| {
        let section = n.split_once('.').map_or(n, |(s, _)| s);
        followed.contains(&section)
    };
    let st = engine.status();
    let open: Vec<(String, String, Option<String>)> = st
        .interfaces
        .iter()
        .filter(|i| !is_followed(&i.name))
        .map(|i| (i.name.clone(), i.local.clone(), i.device.clone()))
        .collect();
    let want = &cfg.engine.interfaces;
    let same = |i: &InterfaceConfig, o: &(String, String, Option<String>)| {
        std::net::SocketAddr::new(i.address, i.port).to_string() == o.1 && i.device == o.2
    };
    let mut to_add: Vec<InterfaceConfig> = Vec::new();
    let mut to_close: Vec<String> = Vec::new();
    for i in want {
        match open.iter().find(|o| o.0 == i.name) {
            Some(o) if same(i, o) => {}
            Some(_) => {
                to_close.push(i.name.clone());
                to_add.push(i.clone());
            }
            None => to_add.push(i.clone()),
        }
    }
    let gone: Vec<String> = open
        .iter()
        .filter(|o| !want.iter().any(|i| i.name == o.0))
        .map(|o| o.0.clone())
        .collect();
    // Replaced ones first (closed, opened again), new ones; removed ones after the SAs,
    // whose paths may use them.
    for name in &to_close {
        engine
            .remove_interface(name)
            .map_err(|e| fail(&done, e.to_string()))?;
    }
    for i in &to_add {
        let name = i.name.clone();
        let replaced = to_close.contains(&name);
        engine
            .add_interface(i.clone())
            .map_err(|e| fail(&done, e.to_string()))?;
        done.push(format!(
            "interface {name} {} ({}:{})",
            if replaced { "changed" } else { "added" },
            i.address,
            i.port
        ));
    }

    // Manual SAs.
    let old_sas = old_doc.names("sa");
    let new_sas = doc.names("sa");
    let state_dir = cfg.engine.state_dir.clone();
    let spec_of = |name: &str| cfg.engine.sas.iter().find(|s| s.name == name);
    let tun = st.tun.clone();
    let default_routes = cfg.engine.routes.is_empty();
    let mut new_routes: Vec<Prefix> = Vec::new();
    for name in &old_sas {
        if new_sas.contains(name) {
            continue;
        }
        engine
            .remove_manual_sa(name)
            .map_err(|e| fail(&done, e.to_string()))?;
        done.push(format!("sa {name} removed"));
    }
    for name in &new_sas {
        let Some(spec) = spec_of(name) else { continue };
        let (old_t, new_t) = (old_doc.entry("sa", name), doc.entry("sa", name));
        let secrets_same = old_doc.same_secrets(&doc, "sa", name);
        if old_t.is_some() && old_t == new_t && secrets_same {
            continue;
        }
        let base = ["paths", "policy"];
        if old_t.is_some() && secrets_same && without(old_t, &base) == without(new_t, &base) {
            // Only paths and policy: one table swap, the SA untouched.
            let mut ops = Vec::new();
            let mut what = Vec::new();
            let policy = |t: Option<&toml::Table>| {
                t.and_then(|t| t.get("policy"))
                    .and_then(toml::Value::as_str)
                    .unwrap_or("failover")
                    .to_owned()
            };
            if policy(old_t) != policy(new_t) {
                ops.push(TableOp::SetPolicy {
                    sa: name.clone(),
                    policy: spec.policy,
                });
                what.push(format!("policy {}", policy(new_t)));
            }
            let (old_p, new_p) = (path_tables(old_t), path_tables(new_t));
            for (pn, pt) in &old_p {
                match new_p.iter().find(|(n, _)| n == pn) {
                    Some((_, nt)) if nt == pt => {}
                    Some((_, nt))
                        if without(Some(nt), &["role"]) == without(Some(pt), &["role"]) =>
                    {
                        if let Some(p) = spec.paths.iter().find(|p| &p.name == pn) {
                            ops.push(TableOp::SetRole {
                                sa: name.clone(),
                                path: pn.clone(),
                                role: p.role,
                            });
                            what.push(format!("path {pn} role {}", p.role.name()));
                        }
                    }
                    Some(_) => {
                        ops.push(TableOp::RemovePath {
                            sa: name.clone(),
                            path: pn.clone(),
                        });
                        if let Some(p) = spec.paths.iter().find(|p| &p.name == pn) {
                            ops.push(TableOp::AddPath {
                                sa: name.clone(),
                                path: p.clone(),
                            });
                        }
                        what.push(format!("path {pn} changed"));
                    }
                    None => {
                        ops.push(TableOp::RemovePath {
                            sa: name.clone(),
                            path: pn.clone(),
                        });
                        what.push(format!("path {pn} removed"));
                    }
                }
            }
            for (pn, _) in &new_p {
                if old_p.iter().any(|(n, _)| n == pn) {
                    continue;
                }
                if let Some(p) = spec.paths.iter().find(|p| &p.name == pn) {
                    ops.push(TableOp::AddPath {
                        sa: name.clone(),
                        path: p.clone(),
                    });
                    what.push(format!("path {pn} added"));
                }
            }
            let order: Vec<String> = new_p.iter().map(|(n, _)| n.clone()).collect();
            let kept: Vec<&String> = old_p
                .iter()
                .map(|(n, _)| n)
                .filter(|n| order.contains(n))
                .collect();
            if kept
                .iter()
                .zip(order.iter().filter(|n| kept.contains(n)))
                .any(|(a, b)| *a != b)
                || order.len() != kept.len()
            {
                ops.push(TableOp::SetPathOrder {
                    sa: name.clone(),
                    order,
                });
            }
            if !ops.is_empty() {
                engine
                    .apply(ops)
                    .map_err(|e| fail(&done, format!("sa {name}: {e}")))?;
            }
            if !what.is_empty() {
                done.push(format!("sa {name}: {}", what.join(", ")));
            }
            continue;
        }
        let Some(dir) = state_dir.as_deref() else {
            return Err(fail(
                &done,
                format!("sa {name}: no state_dir for its marks"),
            ));
        };
        let replaced = old_t.is_some();
        if replaced {
            engine
                .remove_manual_sa(name)
                .map_err(|e| fail(&done, e.to_string()))?;
        }
        engine
            .install_manual_sa(spec.clone(), dir)
            .map_err(|e| fail(&done, e.to_string()))?;
        new_routes.extend(spec.remote_ts.iter().copied());
        done.push(format!(
            "sa {name} {} (spi_in {:08x}, spi_out {:08x})",
            if replaced { "replaced" } else { "added" },
            spec.spi_in,
            spec.spi_out
        ));
    }
    if default_routes {
        // As at start: every manual SA's remote selectors are routed into the TUN. Those
        // no SA of the file has any more go.
        let still: Vec<Prefix> = cfg
            .engine
            .sas
            .iter()
            .flat_map(|s| s.remote_ts.iter().copied())
            .collect();
        let mut changes: Vec<Change> = Vec::new();
        new_routes.dedup();
        for prefix in new_routes {
            changes.push(Change::AddRoute {
                prefix,
                dev: tun.clone(),
                src: None,
            });
        }
        for s in &node.running.cfg.engine.sas {
            if new_sas.contains(&s.name) {
                continue;
            }
            for p in &s.remote_ts {
                if !still.contains(p) {
                    changes.push(Change::DelRoute {
                        prefix: *p,
                        dev: tun.clone(),
                    });
                }
            }
        }
        for c in &changes {
            if let Err(e) = c.apply() {
                warn!("reload: {e}");
            }
        }
    }
    for name in &gone {
        engine
            .remove_interface(name)
            .map_err(|e| fail(&done, e.to_string()))?;
        done.push(format!("interface {name} removed"));
    }
    if node.follower.is_none() && (!gone.is_empty() || !to_add.is_empty()) {
        node.fixed = cfg.engine.interfaces.clone();
        if let Some(ike) = &node.ike {
            ike.interface_sink().publish(node.fixed.clone());
        }
    } else {
        node.fixed = cfg.engine.interfaces.clone();
    }

    // Connections.
    let old_conns = &node.running.cfg.ike.connections;
    let new_prints = fingerprints(&cfg);
    let mut changes: Vec<ConnChange> = Vec::new();
    for c in &cfg.ike.connections {
        match node.running.fingerprints.get(&c.name) {
            None => changes.push(ConnChange::Add(c.clone())),
            Some(o) if Some(o) != new_prints.get(&c.name) => {
                changes.push(ConnChange::Replace(c.clone()));
            }
            Some(_) => {}
        }
    }
    for o in old_conns {
        if !cfg.ike.connections.iter().any(|c| c.name == o.name) {
            changes.push(ConnChange::Remove(o.name.clone()));
        }
    }
    // An unchanged pool keeps its leases: the new configuration takes the old pool
    // object wherever it names the same addresses.
    let old_pools: Vec<_> = old_conns
        .iter()
        .flat_map(|c| c.ike.pools.iter().cloned())
        .collect();
    for ch in &mut changes {
        if let ConnChange::Add(c) | ConnChange::Replace(c) = ch {
            for p in &mut c.ike.pools {
                if let Some(o) = old_pools.iter().find(|o| o.same_range(p)) {
                    *p = std::sync::Arc::clone(o);
                }
            }
        }
    }
    if !changes.is_empty() {
        if node.ike.is_none() {
            // The daemon started without connections: IKE starts now, on port 4500 of
            // the interfaces (port 500 needs root, which the daemon gave up).
            let settings = crate::config::IkeSettings {
                connections: Vec::new(),
                ..cfg.ike.clone()
            };
            let ike = IkeHandle::start(
                std::sync::Arc::clone(&engine),
                settings,
                cfg.interface_prefs.clone(),
                &node.fixed,
                IkePorts::default(),
            )
            .map_err(|e| fail(&done, format!("cannot start the IKE thread: {e}")))?;
            done.push("IKE started (port 4500 only until a restart)".into());
            node.ike = Some(ike);
        }
        if let Some(ike) = node.ike.as_mut() {
            let lines = ike
                .reload(changes)
                .map_err(|e| fail(&done, e.to_string()))?;
            done.extend(lines);
        }
    }
    // Interface priorities and `alternate`: mifsec peers are told the new list (the
    // extension's interface announcement); paths follow as the peers' lists say.
    if cfg.interface_prefs != node.running.cfg.interface_prefs {
        if let Some(ike) = node.ike.as_ref() {
            if let Some(line) = ike
                .set_prefs(cfg.interface_prefs.clone())
                .map_err(|e| fail(&done, e.to_string()))?
            {
                done.push(line);
            }
        }
    }
    node.running.cfg = cfg;
    node.running.doc = doc;
    node.running.fingerprints = new_prints;
    for l in &done {
        info!("reload {}: {l}", path.display());
    }
    if done.is_empty() {
        info!("reload {}: no changes", path.display());
    }
    Ok(done)
}

/// A successful `ctl` change, applied to the running document (so that `showconf` shows
/// it). Changes of IKE child SAs (which are not in the file) leave it alone.
pub(super) fn note_ctl(doc: &mut RunningDoc, req: &Request) {
    match req {
        Request::AddInterface {
            name,
            address,
            device,
            port,
        } => doc.add_interface(name, address, device.as_deref(), *port),
        Request::RemoveInterface { name } => doc.remove_interface(name),
        Request::Policy { sa, policy } => doc.set_policy(sa, policy),
        Request::Handover { sa, path, .. } => doc.handover(sa, path),
        Request::AddPath {
            sa,
            name,
            interface,
            remote,
            role,
            weight,
            pin,
        } => {
            let mut t = toml::Table::new();
            t.insert("name".into(), name.clone().into());
            t.insert("interface".into(), interface.clone().into());
            t.insert("remote".into(), remote.clone().into());
            if let Some(r) = role {
                t.insert("role".into(), r.clone().into());
            }
            if let Some(w) = weight {
                t.insert("weight".into(), i64::from(*w).into());
            }
            if !pin.is_empty() {
                t.insert(
                    "pin".into(),
                    toml::Value::Array(pin.iter().map(|p| p.clone().into()).collect()),
                );
            }
            doc.add_path(sa, t);
        }
        Request::RemovePath { sa, name } => doc.remove_path(sa, name),
        _ => {}
    }
}

/// `list-conns`: the loaded connections, as `swanctl --list-conns` shows them.
pub(super) fn list_conns(running: &Running) -> Value {
    let doc = &running.doc;
    let strs = |t: Option<&toml::Table>, k: &str| -> Vec<String> {
        t.and_then(|t| t.get(k))
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let str_or = |t: Option<&toml::Table>, k: &str, d: &str| -> String {
        t.and_then(|t| t.get(k))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_else(|| d.to_owned())
    };
    let list: Vec<Value> = running
        .cfg
        .ike
        .connections
        .iter()
        .map(|c| {
            let t = doc.entry("connections", &c.name);
            let sub = |k: &str| t.and_then(|t| t.get(k)).and_then(toml::Value::as_table);
            let children: Vec<Value> = c
                .ike
                .all_children()
                .map(|ch| {
                    let ct = sub("children")
                        .and_then(|s| s.get(&ch.name))
                        .and_then(toml::Value::as_table);
                    let ts = |k: &str| {
                        let v = strs(ct, k);
                        if v.is_empty() { vec!["dynamic".to_owned()] } else { v }
                    };
                    let props = strs(ct, "esp_proposals");
                    json!({
                        "name": ch.name,
                        "mode": format!("{:?}", ch.mode).to_uppercase(),
                        "local_ts": ts("local_ts"),
                        "remote_ts": ts("remote_ts"),
                        "esp_proposals": if props.is_empty() { vec!["default".to_owned()] } else { props },
                        "policy": ch.policy.name(),
                        "clone_only": c.ike.clone_children.contains(&ch.name),
                    })
                })
                .collect();
            let props = strs(t, "proposals");
            json!({
                "name": c.name,
                "version": "IKEv2",
                "local_addrs": if c.local_addrs.is_empty() { vec!["%any".to_owned()] } else { c.local_addrs.iter().map(ToString::to_string).collect() },
                "remote_addrs": if c.remote_addrs.is_empty() { vec!["%any".to_owned()] } else { c.remote_addrs.iter().map(ToString::to_string).collect() },
                "proposals": if props.is_empty() { vec!["default".to_owned()] } else { props },
                "start_action": if c.start { "start" } else { "none" },
                "local": {
                    "auth": c.ike.local_auth.name(),
                    "id": super::status::id_string(&c.ike.local_id),
                },
                "remote": {
                    "auth": c.ike.remote_auth.name(),
                    "id": c.ike.remote_id.as_ref().map_or_else(|| "%any".to_owned(), super::status::id_string),
                },
                "vips": strs(t, "vips"),
                "pools": c.pools,
                "mobike": c.ike.mobike,
                "mif": c.ike.mif,
                "rekey_time": str_or(t, "rekey_time", "4h"),
                "dpd_delay": str_or(t, "dpd_delay", "0"),
                "children": children,
            })
        })
        .collect();
    Value::Array(list)
}
