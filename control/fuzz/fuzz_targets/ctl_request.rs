//! Control-socket requests (`ctl::handle_line`) against the stand-in engine (`ctl::stand_in`: names starting with "no" are refused): any line gets
//! exactly one response line of JSON with `ok` true or false, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_control::ctl::handle_line;
use mifsec_control::ctl::stand_in::StandIn;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let (req, resp) = handle_line(&StandIn::default(), line);
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
