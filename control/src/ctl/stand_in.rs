//! A stand-in for the engine behind the control socket, for the protocol's unit tests and
//! the `ctl_request` fuzz target (built for them only: `cfg(test)` or the `stand-in`
//! feature, which control/fuzz enables).

use std::sync::Mutex;

use super::Target;
use crate::daemon::ike_thread::CommandError;
use crate::dataplane::engine::{EngineError, EngineStatus, InterfaceConfig, PathSpec};
use crate::dataplane::sa_table::Policy;

/// Accepts every call and records it (`handover t fast false`), except those that name an
/// SA, path, interface or connection starting with "no": those fail with
/// `no SA named "NAME"` ([`EngineError::NoSa`]), or for a connection
/// `no connection named "NAME"` ([`CommandError::NoConnection`]).
#[derive(Debug, Default)]
pub struct StandIn {
    calls: Mutex<Vec<String>>,
    /// Drop counters to add to the status, to make it big.
    bulk: usize,
    /// Whether the status has the daemon's keys too (`configured_interfaces`, `netlink`,
    /// `ike_sas`, `ike`), as with IKE and followed interfaces.
    daemon_keys: bool,
}

impl StandIn {
    /// A stand-in whose status carries `bulk` drop counters (a big answer).
    pub fn with_bulk(bulk: usize) -> StandIn {
        StandIn {
            bulk,
            ..StandIn::default()
        }
    }

    /// A stand-in whose status has the keys the daemon adds (IKE SAs, IKE counters, the
    /// configured interfaces and the netlink counters), made up.
    pub fn with_daemon_keys() -> StandIn {
        StandIn {
            daemon_keys: true,
            ..StandIn::default()
        }
    }

    /// Records `call`; refuses it with the first of `names` that starts with "no".
    fn answer(&self, call: String, names: &[&str]) -> Result<String, String> {
        self.calls.lock().unwrap().push(call);
        match names.iter().find(|n| n.starts_with("no")) {
            Some(n) => Err((*n).to_owned()),
            None => Ok(format!("{}: done", names[0])),
        }
    }

    fn engine(&self, call: String, names: &[&str]) -> Result<String, EngineError> {
        self.answer(call, names)
            .map_err(|name| EngineError::NoSa { name })
    }

    fn ike(&self, call: String, conn: &str) -> Result<String, CommandError> {
        self.answer(call, &[conn])
            .map_err(|name| CommandError::NoConnection { name })
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Target for StandIn {
    fn status(&self) -> EngineStatus {
        EngineStatus {
            workers: 2,
            tun: "mifsec0".into(),
            tun_offloads: "none".into(),
            table_swaps: 1,
            uptime_s: 1.0,
            interfaces: vec![],
            sas: vec![],
            drops: (0..self.bulk)
                .map(|i| (format!("reason-{i:08}"), i as u64))
                .collect(),
            offload: Default::default(),
        }
    }
    fn handover(&self, sa: &str, path: &str, hard: bool) -> Result<String, EngineError> {
        self.engine(format!("handover {sa} {path} {hard}"), &[sa])
    }
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, EngineError> {
        let call = format!("add_interface {iface:?}");
        self.engine(call, &[&iface.name])
    }
    fn remove_interface(&self, name: &str) -> Result<String, EngineError> {
        self.engine(format!("remove_interface {name}"), &[name])
    }
    fn set_policy(&self, sa: &str, policy: Policy) -> Result<String, EngineError> {
        self.engine(format!("set_policy {sa} {policy:?}"), &[sa])
    }
    fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, EngineError> {
        let call = format!("add_path {sa} {path:?}");
        self.engine(call, &[sa, &path.name])
    }
    fn remove_path(&self, sa: &str, path: &str) -> Result<String, EngineError> {
        self.engine(format!("remove_path {sa} {path}"), &[sa, path])
    }
    fn wireshark_keys(&self) -> Vec<String> {
        vec!["line1".into(), "line2".into()]
    }
    fn ike_sas(&self, engine: &EngineStatus) -> Option<String> {
        self.daemon_keys.then(|| {
            serde_json::json!([{ "conn": "home", "id": 1, "workers": engine.workers,
                                 "children": [{ "name": "net", "spi_in": "c0ffee01" }] }])
            .to_string()
        })
    }
    fn ike_stats(&self) -> Option<serde_json::Value> {
        self.daemon_keys
            .then(|| serde_json::json!({ "half_open": 0, "counters": { "ike_sa_init": 3 } }))
    }
    fn interface_details(
        &self,
        engine: &EngineStatus,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let _ = engine;
        let v = serde_json::json!({
            "configured_interfaces": [{ "name": "wan", "device": "eth0", "kind": "followed" }],
            "netlink": { "messages": 7, "parse_errors": 0 },
        });
        self.daemon_keys.then(|| v.as_object().cloned()).flatten()
    }
    fn initiate(&self, conn: &str) -> Result<String, CommandError> {
        self.ike(format!("initiate {conn}"), conn)
    }
    fn terminate(&self, conn: &str) -> Result<String, CommandError> {
        self.ike(format!("terminate {conn}"), conn)
    }
    fn rekey(&self, conn: &str, ike: bool) -> Result<String, CommandError> {
        self.ike(format!("rekey {conn} {ike}"), conn)
    }
    fn move_sa(
        &self,
        conn: &str,
        local: std::net::IpAddr,
        remote: Option<std::net::IpAddr>,
    ) -> Result<String, CommandError> {
        self.ike(format!("move {conn} {local} {remote:?}"), conn)
    }
    /// Answers every child SA of a "selection" of two as applied with two paths; a
    /// connection whose name starts with "silent" gets no answer.
    fn mif(
        &self,
        conn: &str,
        cmd: super::mif::MifCommand,
    ) -> Result<Vec<super::mif::MifAnswer>, CommandError> {
        use super::mif::{MifAnswer, MifChildAnswer};
        self.ike(
            format!(
                "mif {conn} {:?} {:?} {}",
                cmd.action, cmd.select, cmd.dry_run
            ),
            conn,
        )?;
        let answered = !conn.starts_with("silent");
        Ok(vec![MifAnswer {
            ike_sa: 1,
            op: cmd.action.name().into(),
            dry_run: cmd.dry_run,
            answered,
            refused: None,
            children: if answered {
                ["c1000001", "c1000002"]
                    .map(|spi| MifChildAnswer {
                        spi: spi.into(),
                        status: "applied".into(),
                        paths: 2,
                    })
                    .to_vec()
            } else {
                Vec::new()
            },
        }])
    }
}
