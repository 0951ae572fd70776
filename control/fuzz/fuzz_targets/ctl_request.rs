//! Control-socket requests (`ctl::handle_line`) against a stand-in engine: any line gets
//! exactly one response line of JSON with `ok` true or false, never a panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use mifsec_control::ctl::{Target, handle_line};
use mifsec_control::dataplane::engine::{ControlError, EngineStatus, InterfaceConfig, PathSpec};
use mifsec_control::dataplane::sa_table::Policy;

/// Accepts everything, except names starting with "no".
struct StandIn;

fn answer(name: &str) -> Result<String, ControlError> {
    if name.starts_with("no") {
        Err(ControlError(format!("no SA named {name:?}")))
    } else {
        Ok(format!("{name}: done"))
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
            drops: BTreeMap::new(),
        }
    }
    fn handover(&self, sa: &str, _path: &str, _hard: bool) -> Result<String, ControlError> {
        answer(sa)
    }
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, ControlError> {
        answer(&iface.name)
    }
    fn remove_interface(&self, name: &str) -> Result<String, ControlError> {
        answer(name)
    }
    fn set_policy(&self, sa: &str, _policy: Policy) -> Result<String, ControlError> {
        answer(sa)
    }
    fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, ControlError> {
        answer(sa)?;
        answer(&path.name)
    }
    fn remove_path(&self, sa: &str, path: &str) -> Result<String, ControlError> {
        answer(sa)?;
        answer(path)
    }
    fn wireshark_keys(&self) -> Vec<String> {
        vec!["key line".into()]
    }
    fn initiate(&self, conn: &str) -> Result<String, ControlError> {
        answer(conn)
    }
    fn terminate(&self, conn: &str) -> Result<String, ControlError> {
        answer(conn)
    }
    fn rekey(&self, conn: &str, _ike: bool) -> Result<String, ControlError> {
        answer(conn)
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let (req, resp) = handle_line(&StandIn, line);
    if let Some(req) = &req {
        let _ = (req.changes_state(), req.describe());
    }
    let out = resp.to_line();
    assert!(!out.contains('\n'), "one response is one line");
    let v: serde_json::Value = serde_json::from_str(&out).expect("the response is JSON");
    let ok = v.get("ok").and_then(serde_json::Value::as_bool);
    assert!(ok.is_some(), "{out}");
    if req.is_none() {
        assert_eq!(ok, Some(false), "a line that is no request is refused");
    }
});
