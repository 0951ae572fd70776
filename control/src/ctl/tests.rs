//! Protocol and socket tests against a test double of the engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::*;

/// Records the calls it gets; fails the ones that name "nope".
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn refuse(what: &str) -> Result<String, ControlError> {
    if what == "nope" {
        Err(ControlError(format!("no SA named {what:?}")))
    } else {
        Ok(format!("{what}: done"))
    }
}

impl Control for Fake {
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
    fn handover(&self, sa: &str, path: &str, hard: bool) -> Result<String, ControlError> {
        self.log(format!("handover {sa} {path} {hard}"));
        refuse(sa)
    }
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, ControlError> {
        self.log(format!("add_interface {iface:?}"));
        refuse(&iface.name)
    }
    fn remove_interface(&self, name: &str) -> Result<String, ControlError> {
        self.log(format!("remove_interface {name}"));
        refuse(name)
    }
    fn set_policy(&self, sa: &str, policy: Policy) -> Result<String, ControlError> {
        self.log(format!("set_policy {sa} {policy:?}"));
        refuse(sa)
    }
    fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, ControlError> {
        self.log(format!("add_path {sa} {path:?}"));
        refuse(sa)
    }
    fn remove_path(&self, sa: &str, path: &str) -> Result<String, ControlError> {
        self.log(format!("remove_path {sa} {path}"));
        refuse(sa)
    }
    fn wireshark_keys(&self) -> Vec<String> {
        vec!["line1".into(), "line2".into()]
    }
}

fn handle(fake: &Fake, line: &str) -> Value {
    serde_json::from_str(&handle_line(fake, line).1.to_line()).unwrap()
}

#[test]
fn requests_have_the_documented_wire_form() {
    let cases = [
        (Request::Status {}, r#"{"cmd":"status"}"#),
        (Request::Keys {}, r#"{"cmd":"keys"}"#),
        (
            Request::Handover {
                sa: "t".into(),
                path: "fast".into(),
                hard: true,
            },
            r#"{"cmd":"handover","sa":"t","path":"fast","hard":true}"#,
        ),
        (
            Request::AddInterface {
                name: "l3".into(),
                address: "198.18.3.2".into(),
                device: Some("v3".into()),
                port: Some(4501),
            },
            r#"{"cmd":"add-interface","name":"l3","address":"198.18.3.2","device":"v3","port":4501}"#,
        ),
        (
            Request::AddInterface {
                name: "l3".into(),
                address: "198.18.3.2".into(),
                device: None,
                port: None,
            },
            r#"{"cmd":"add-interface","name":"l3","address":"198.18.3.2"}"#,
        ),
        (
            Request::RemoveInterface { name: "l3".into() },
            r#"{"cmd":"remove-interface","name":"l3"}"#,
        ),
        (
            Request::Policy {
                sa: "t".into(),
                policy: "redundant".into(),
            },
            r#"{"cmd":"policy","sa":"t","policy":"redundant"}"#,
        ),
        (
            Request::AddPath {
                sa: "t".into(),
                name: "p3".into(),
                interface: "l3".into(),
                remote: "198.18.3.1:4500".into(),
                role: Some("standby".into()),
                weight: Some(5),
                pin: vec![],
            },
            r#"{"cmd":"add-path","sa":"t","name":"p3","interface":"l3","remote":"198.18.3.1:4500","role":"standby","weight":5}"#,
        ),
        (
            Request::RemovePath {
                sa: "t".into(),
                name: "p3".into(),
            },
            r#"{"cmd":"remove-path","sa":"t","name":"p3"}"#,
        ),
    ];
    for (req, json) in cases {
        assert_eq!(serde_json::to_string(&req).unwrap(), json);
        assert_eq!(serde_json::from_str::<Request>(json).unwrap(), req);
    }
    // `hard` is optional.
    assert_eq!(
        serde_json::from_str::<Request>(r#"{"cmd":"handover","sa":"t","path":"p"}"#).unwrap(),
        Request::Handover {
            sa: "t".into(),
            path: "p".into(),
            hard: false
        }
    );
}

#[test]
fn dispatch_calls_the_engine_and_wraps_its_answer() {
    let fake = Fake::default();
    assert_eq!(
        handle(
            &fake,
            r#"{"cmd":"handover","sa":"t","path":"fast","hard":true}"#
        ),
        serde_json::json!({"ok": true, "result": "t: done"})
    );
    assert_eq!(
        handle(&fake, r#"{"cmd":"handover","sa":"nope","path":"fast"}"#),
        serde_json::json!({"ok": false, "error": "no SA named \"nope\""})
    );
    let st = handle(&fake, r#"{"cmd":"status"}"#);
    assert_eq!(st["ok"], true);
    assert_eq!(st["result"]["tun"], "mifsec0");
    assert_eq!(st["result"]["workers"], 2);
    assert_eq!(
        handle(&fake, r#"{"cmd":"keys"}"#)["result"],
        serde_json::json!(["line1", "line2"])
    );
    handle(
        &fake,
        r#"{"cmd":"add-interface","name":"l3","address":"198.18.3.2"}"#,
    );
    handle(&fake, r#"{"cmd":"policy","sa":"t","policy":"pinned"}"#);
    handle(
        &fake,
        r#"{"cmd":"add-path","sa":"t","name":"p3","interface":"l3","remote":"[::1]:4500","pin":["10.0.0.0/8"]}"#,
    );
    handle(&fake, r#"{"cmd":"remove-path","sa":"t","name":"p3"}"#);
    handle(&fake, r#"{"cmd":"remove-interface","name":"l3"}"#);
    assert_eq!(
        fake.calls(),
        vec![
            "handover t fast true".to_owned(),
            "handover nope fast false".into(),
            r#"add_interface InterfaceConfig { name: "l3", device: None, address: 198.18.3.2, port: 4500 }"#.into(),
            "set_policy t Pinned".into(),
            r#"add_path t PathSpec { name: "p3", interface: "l3", remote: [::1]:4500, role: Active, weight: 1, pin: [Prefix { addr: 10.0.0.0, len: 8 }] }"#.into(),
            "remove_path t p3".into(),
            "remove_interface l3".into(),
        ]
    );
}

#[test]
fn malformed_requests_get_error_responses() {
    let fake = Fake::default();
    for (line, want) in [
        ("", "bad request: EOF"),
        ("not json", "bad request: expected ident"),
        ("{}", "bad request: missing field `cmd`"),
        (
            r#"{"cmd":"reboot"}"#,
            "bad request: unknown variant `reboot`",
        ),
        (
            r#"{"cmd":"status","x":1}"#,
            "bad request: unknown field `x`",
        ),
        (
            r#"{"cmd":"keys","wireshark":true}"#,
            "bad request: unknown field `wireshark`",
        ),
        (
            r#"{"cmd":"handover","sa":"t","path":"p","hardd":true}"#,
            "bad request: unknown field `hardd`",
        ),
        (
            r#"{"cmd":"handover","sa":"t"}"#,
            "bad request: missing field `path`",
        ),
        (
            r#"{"cmd":"add-interface","name":"l3","address":"nowhere"}"#,
            r#""nowhere" is not an IP address"#,
        ),
        (
            r#"{"cmd":"add-interface","name":"l 3","address":"::1"}"#,
            r#""l 3": interface names are"#,
        ),
        (
            r#"{"cmd":"add-interface","name":"l3","address":"::1","port":70000}"#,
            "bad request: invalid value: integer `70000`",
        ),
        (
            r#"{"cmd":"policy","sa":"t","policy":"fastest"}"#,
            r#""fastest": policy is failover"#,
        ),
        (
            r#"{"cmd":"add-path","sa":"t","name":"p","interface":"l","remote":"1.2.3.4"}"#,
            r#""1.2.3.4" is not an address:port"#,
        ),
        (
            r#"{"cmd":"add-path","sa":"t","name":"p","interface":"l","remote":"1.2.3.4:1","role":"x"}"#,
            r#""x": role is"#,
        ),
        (
            r#"{"cmd":"add-path","sa":"t","name":"p","interface":"l","remote":"1.2.3.4:1","weight":0}"#,
            "weight must be 1 to 1000000",
        ),
        ("[1,2]", "bad request: "),
    ] {
        let r = handle(&fake, line);
        assert_eq!(r["ok"], false, "{line}");
        let e = r["error"].as_str().unwrap();
        assert!(e.starts_with(want), "{line}: {e}");
    }
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

fn temp_socket(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mifsec-ctl-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("sub").join("ctl.sock")
}

fn serve_fake(path: &Path) -> (Server, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let f = Arc::clone(&fake);
    let server = Listener::bind(path)
        .unwrap()
        .serve(move |line| handle_line(&*f, line).1.to_line())
        .unwrap();
    (server, fake)
}

#[test]
fn socket_round_trip_permissions_and_cleanup() {
    let path = temp_socket("rt");
    let (server, fake) = serve_fake(&path);
    let dir = path.parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let st = call(&path, &Request::Status {}).unwrap();
    assert_eq!(st["tun"], "mifsec0");
    let msg = call(
        &path,
        &Request::Handover {
            sa: "t".into(),
            path: "p".into(),
            hard: false,
        },
    )
    .unwrap();
    assert_eq!(msg, "t: done");
    let e = call(
        &path,
        &Request::RemovePath {
            sa: "nope".into(),
            name: "p".into(),
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "no SA named \"nope\"");
    assert_eq!(fake.calls().len(), 2);

    // Several requests on one connection, garbage among them, and the server lives on.
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"{\"cmd\":\"keys\"}\n\ngarbage\n{\"cmd\":\"status\"}\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["result"], serde_json::json!(["line1", "line2"]));
    assert_eq!(lines[1]["ok"], false);
    assert_eq!(lines[2]["ok"], true);

    // An over-long line is refused and the connection closed; the server lives on.
    let mut s = UnixStream::connect(&path).unwrap();
    let _ = s.write_all(&vec![b'x'; MAX_LINE + 10]);
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.contains("longer than"), "{text}");
    assert!(call(&path, &Request::Status {}).is_ok());

    // A second daemon on the same socket is refused while the first answers.
    let e = Listener::bind(&path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");

    server.close();
    assert!(!path.exists());
    let e = call(&path, &Request::Status {}).unwrap_err();
    assert!(matches!(e, ClientError::Connect(..)), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot connect to {}: ", path.display())),
        "{e}"
    );
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn stale_socket_is_replaced_and_other_files_are_not_touched() {
    let path = temp_socket("stale");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A socket file nobody listens on: what a crashed daemon leaves.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (server, _) = serve_fake(&path);
    assert!(call(&path, &Request::Status {}).is_ok());
    drop(server);
    assert!(!path.exists());

    std::fs::write(&path, "not a socket").unwrap();
    let e = Listener::bind(&path).unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
}
