//! Protocol and socket tests against a test double of the engine.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::server::lookup_group;
use super::*;

/// The stand-in records the calls it gets and fails the ones that name "nope".
type Fake = super::stand_in::StandIn;

fn handle(fake: &Fake, line: &str) -> Value {
    serde_json::from_str(&handle_line(fake, line).1.to_line()).unwrap()
}

#[test]
fn requests_have_the_documented_wire_form() {
    let cases = [
        (Request::Status {}, r#"{"cmd":"status"}"#),
        (Request::Keys {}, r#"{"cmd":"keys"}"#),
        (Request::Log { level: None }, r#"{"cmd":"log"}"#),
        (
            Request::Log {
                level: Some("debug".into()),
            },
            r#"{"cmd":"log","level":"debug"}"#,
        ),
        (Request::Events {}, r#"{"cmd":"events"}"#),
        (
            Request::Watch { interval_ms: 50 },
            r#"{"cmd":"watch","interval_ms":50}"#,
        ),
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
            r#"add_path t PathSpec { name: "p3", interface: "l3", remote: [::1]:4500, role: Active, weight: 1, pin: [Prefix { addr: 10.0.0.0, len: 8 }], verify: false }"#.into(),
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
    serve_fake_with(path, Fake::default(), Access::default(), REQUEST_DEADLINE)
}

fn serve_fake_with(
    path: &Path,
    fake: Fake,
    access: Access,
    deadline: Duration,
) -> (Server, Arc<Fake>) {
    let fake = Arc::new(fake);
    let f = Arc::clone(&fake);
    let server = Listener::bind(path, access)
        .unwrap()
        .with_deadline(deadline)
        .serve(move |_peer, req| dispatch(&*f, req))
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
    let _ = s.write_all(&vec![b'x'; MAX_REQUEST + 10]);
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.contains("longer than"), "{text}");
    assert!(call(&path, &Request::Status {}).is_ok());

    // A second daemon on the same socket is refused while the first answers.
    let e = Listener::bind(&path, Access::default()).unwrap_err();
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
    let e = Listener::bind(&path, Access::default()).unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
}

/// Runs `f` on a new thread whose credentials (that thread's only: the raw syscalls do not
/// go through libc's all-threads broadcast) are uid and gid 65534 with `groups`.
fn as_nobody<T: Send + 'static>(groups: &[u32], f: impl FnOnce() -> T + Send + 'static) -> T {
    let groups = groups.to_vec();
    std::thread::spawn(move || {
        // SAFETY: raw credential syscalls with a valid array of `groups.len()` gids; they
        // change only the calling thread, which ends after `f`.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                0,
                "setgroups: {}",
                io::Error::last_os_error()
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
        }
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn access_rules() {
    let peer = |uid, gid, groups: &[u32]| Peer {
        pid: 1,
        uid,
        gid,
        groups: groups.to_vec(),
    };
    let none = Access::default();
    let group = Access {
        group: Some(("ops".into(), 500)),
        owner: Some(998),
    };
    for class in [Class::Read, Class::Change, Class::Keys] {
        assert_eq!(none.check(&peer(0, 0, &[]), class), Ok(()));
        assert_eq!(group.check(&peer(0, 7, &[]), class), Ok(()));
        // The daemon's own user.
        assert_eq!(group.check(&peer(998, 998, &[]), class), Ok(()));
        let e = none.check(&peer(1000, 500, &[500]), class).unwrap_err();
        assert!(e.contains("uid 1000 is not root"), "{e}");
        let e = group.check(&peer(1000, 100, &[7, 8]), class).unwrap_err();
        assert!(
            e.contains("uid 1000 is neither root nor in the control group ops (gid 500)"),
            "{e}"
        );
    }
    // Members, by primary or supplementary group: status and changes, never keys.
    for member in [peer(1000, 500, &[]), peer(1000, 100, &[7, 500])] {
        assert_eq!(group.check(&member, Class::Read), Ok(()));
        assert_eq!(group.check(&member, Class::Change), Ok(()));
        let e = group.check(&member, Class::Keys).unwrap_err();
        assert!(
            e.contains("`keys` hands out session keys and needs root"),
            "{e}"
        );
    }
    assert_eq!(Request::Status {}.class(), Class::Read);
    // The subscriptions are readable by whom status is; none hands out a secret.
    for sub in [
        Request::Log { level: None },
        Request::Events {},
        Request::Watch { interval_ms: 50 },
    ] {
        assert_eq!(sub.class(), Class::Read, "{sub:?}");
        assert!(sub.is_subscription() && !sub.changes_state(), "{sub:?}");
    }
    let forged = Request::Terminate {
        conn: "x\nmifsec: stopped".into(),
    };
    assert_eq!(forged.describe(), "terminate x\\u{a}mifsec: stopped");
    assert_eq!(Request::Keys {}.class(), Class::Keys);
    let rekey = Request::Rekey {
        conn: "c".into(),
        ike: false,
    };
    assert_eq!(rekey.class(), Class::Change);
    assert_eq!(lookup_group("root").unwrap(), 0);
    assert_eq!(lookup_group("4242").unwrap(), 4242);
    let e = lookup_group("no-such-group-here").unwrap_err();
    assert!(e.to_string().contains("no such group"), "{e}");
}

#[test]
fn peer_credentials_come_from_the_kernel() {
    let (a, _b) = UnixStream::pair().unwrap();
    let p = peer_of(&a).unwrap();
    assert_eq!(p.pid, std::process::id() as i32);
    // SAFETY: getuid and getgid cannot fail.
    assert_eq!((p.uid, p.gid), unsafe { (libc::getuid(), libc::getgid()) });
    let path = temp_socket("cred");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let p2 = path.clone();
    let seen = as_nobody(&[4242, 4343], move || {
        let _c = UnixStream::connect(&p2).unwrap();
        let (s, _) = listener.accept().unwrap();
        peer_of(&s).unwrap()
    });
    assert_eq!((seen.uid, seen.gid), (65534, 65534));
    assert_eq!(seen.groups, vec![4242, 4343]);
    std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
}

#[test]
fn group_members_may_read_and_change_but_not_take_keys() {
    let path = temp_socket("group");
    // The test's own parent directory must let the client through.
    let top = path.parent().unwrap().parent().unwrap();
    std::fs::create_dir_all(top).unwrap();
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let access = Access {
        group: Some(("test".into(), 4242)),
        owner: None,
    };
    let (server, fake) = serve_fake_with(&path, Fake::default(), access, REQUEST_DEADLINE);
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!((dir.mode() & 0o777, dir.gid()), (0o750, 4242));
    let sock = std::fs::metadata(&path).unwrap();
    assert_eq!((sock.mode() & 0o777, sock.gid()), (0o660, 4242));

    let p = path.clone();
    let (status, handover, keys) = as_nobody(&[4242], move || {
        (
            call(&p, &Request::Status {}).map_err(|e| e.to_string()),
            call(
                &p,
                &Request::Handover {
                    sa: "t".into(),
                    path: "p".into(),
                    hard: false,
                },
            )
            .map_err(|e| e.to_string()),
            call(&p, &Request::Keys {}).map_err(|e| e.to_string()),
        )
    });
    assert_eq!(status.unwrap()["tun"], "mifsec0");
    assert_eq!(handover.unwrap(), "t: done");
    let e = keys.unwrap_err();
    assert!(
        e.contains("`keys` hands out session keys and needs root"),
        "{e}"
    );
    // Root gets the keys.
    assert_eq!(
        call(&path, &Request::Keys {}).unwrap(),
        serde_json::json!(["line1", "line2"])
    );
    // Outside the group: the socket's mode already stops the connect.
    let p = path.clone();
    let e = as_nobody(&[], move || call(&p, &Request::Status {}).unwrap_err());
    assert!(
        matches!(&e, ClientError::Connect(_, io) if io.kind() == io::ErrorKind::PermissionDenied),
        "{e}"
    );
    assert!(
        e.to_string().ends_with(
            "(the control socket admits root and the members of [dataplane] control_group)"
        ),
        "{e}"
    );
    assert_eq!(fake.calls(), vec!["handover t p false".to_owned()]);
    drop(server);
    std::fs::remove_dir_all(top).unwrap();
}

#[test]
fn a_trickling_client_does_not_hold_up_others_and_is_closed_at_its_deadline() {
    use std::sync::atomic::AtomicBool;
    let path = temp_socket("trickle");
    let (server, _) = serve_fake_with(
        &path,
        Fake::default(),
        Access::default(),
        Duration::from_secs(2),
    );
    let closed = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (c, st, p) = (Arc::clone(&closed), Arc::clone(&started), path.clone());
    // One byte of a valid request every 50 ms, for at most 30 s.
    let trickler = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&p).unwrap();
        let req = br#"{"cmd":"status"}"#;
        let mut answer = Vec::new();
        for i in 0..600 {
            if s.write_all(&[req[i % req.len()]]).is_err() {
                break;
            }
            st.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
        }
        // The server has hung up: nothing was answered.
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.read_to_end(&mut answer);
        c.store(true, Ordering::SeqCst);
        answer
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !started.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the trickler never connected");
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = call(&path, &Request::Status {}).unwrap();
    assert_eq!(st["tun"], "mifsec0");
    assert!(
        !closed.load(Ordering::SeqCst),
        "status was answered only after the trickler was gone"
    );
    let answer = trickler.join().unwrap();
    assert!(closed.load(Ordering::SeqCst));
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(server);
    std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
}

#[test]
fn too_many_clients_are_turned_away_until_one_leaves() {
    let path = temp_socket("busy");
    let (server, _) = serve_fake(&path);
    // MAX_CLIENTS idle connections, each answered once so that it is surely being served.
    let mut idle = Vec::new();
    for _ in 0..MAX_CLIENTS {
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":true"), "{line}");
        idle.push(s);
    }
    let e = call(&path, &Request::Status {}).unwrap_err();
    assert!(e.to_string().contains("serving 16 clients already"), "{e}");
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&path, &Request::Status {}).is_err() {
        assert!(Instant::now() < deadline, "no slot came free");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(server);
    std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
}

#[test]
fn an_answer_over_a_mebibyte_arrives_whole() {
    let path = temp_socket("big");
    let fake = Fake::with_bulk(100_000);
    let (server, _) = serve_fake_with(&path, fake, Access::default(), REQUEST_DEADLINE);
    let st = call(&path, &Request::Status {}).unwrap();
    let drops = st["drops"].as_object().unwrap();
    assert_eq!(drops.len(), 100_000);
    assert_eq!(drops["reason-00099999"], 99_999);
    let size = serde_json::to_string(&st).unwrap().len();
    assert!(size > 2 << 20, "{size} bytes");
    drop(server);
    std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
}

#[test]
fn move_checks_its_addresses_before_the_ike_thread() {
    let f = Fake::default();
    let mv = |local: &str, remote: Option<&str>| Request::Move {
        conn: "home".into(),
        local: local.into(),
        remote: remote.map(Into::into),
    };
    let r = dispatch(&f, mv("198.18.22.2", Some("198.18.20.11")));
    assert!(r.ok, "{r:?}");
    let r = dispatch(&f, mv("198.18.22.2", None));
    assert!(r.ok, "{r:?}");
    assert_eq!(
        f.calls(),
        vec![
            "move home 198.18.22.2 Some(198.18.20.11)",
            "move home 198.18.22.2 None"
        ]
    );
    let r = dispatch(&f, mv("not-an-address", None));
    assert_eq!(
        r.error.as_deref(),
        Some("\"not-an-address\" is not an IP address")
    );
    let r = dispatch(&f, mv("198.18.22.2", Some("2001:db8::1")));
    assert!(r.error.unwrap().contains("different families"));
    assert_eq!(f.calls().len(), 2);
    let r = handle_line(
        &f,
        r#"{"cmd":"move","conn":"nohome","local":"198.18.22.2"}"#,
    );
    assert_eq!(r.1.error.as_deref(), Some("no connection named \"nohome\""));
    assert_eq!(
        mv("a", Some("b")).describe(),
        "move home --local a --remote b"
    );
    assert_eq!(mv("a", None).class(), Class::Change);
}

#[test]
fn mif_requests_are_checked_then_answered_per_child_sa() {
    let f = Fake::default();
    let line = r#"{"cmd":"mif","conn":"home","op":"soft-handover","interfaces":["link1","link3"],"spi":"c1000001","check":true}"#;
    let (req, resp) = handle_line(&f, line);
    let req = req.unwrap();
    assert_eq!(serde_json::to_string(&req).unwrap(), line, "the wire form");
    assert_eq!(
        req.describe(),
        "mif home soft-handover link1 link3 --spi c1000001 --check"
    );
    assert_eq!(req.class(), Class::Change);
    let v = resp.into_result().unwrap();
    assert_eq!(
        v["text"],
        "home #1: soft-handover (check): answered for 2 child SAs\n  child SA c1000001: applied, 2 paths\n  child SA c1000002: applied, 2 paths"
    );
    assert_eq!(v["answers"][0]["children"][1]["spi"], "c1000002");
    assert_eq!(
        f.calls(),
        vec!["mif home SoftHandover { from: \"link1\", to: \"link3\" } Spis([3238002689]) true"]
    );
    // Refused before the IKE thread: nothing called.
    let r = handle_line(
        &f,
        r#"{"cmd":"mif","conn":"home","op":"add","interfaces":[],"check":false}"#,
    );
    assert_eq!(r.1.error.as_deref(), Some("mif add takes IFACE, got []"));
    let r = handle_line(&f, r#"{"cmd":"mif","conn":"home","op":"add","bogus":1}"#);
    assert!(r.1.error.unwrap().starts_with("bad request"));
    assert_eq!(f.calls().len(), 1);
    // No answer within the deadline: an error that says so.
    let r = handle_line(
        &f,
        r#"{"cmd":"mif","conn":"silent","op":"check","interfaces":["l3"]}"#,
    );
    assert_eq!(
        r.1.error.as_deref(),
        Some("silent #1: check: no answer within 5 s")
    );
    let r = handle_line(
        &f,
        r#"{"cmd":"mif","conn":"nohome","op":"check","interfaces":["l3"]}"#,
    );
    assert_eq!(r.1.error.as_deref(), Some("no connection named \"nohome\""));
}

/// `status` as the watch samples write it (straight from the structs, the daemon's keys
/// spliced in) is the object `status` was when it was built as a `Value` tree: key for
/// key, value for value, with and without the daemon's keys.
#[test]
fn status_text_is_the_object_status_was() {
    for fake in [Fake::with_bulk(3), Fake::with_daemon_keys()] {
        let st = fake.status();
        let mut want = serde_json::to_value(&st).unwrap();
        let obj = want.as_object_mut().unwrap();
        if let Some(d) = fake.interface_details(&st) {
            obj.extend(d);
        }
        if let Some(ike) = fake.ike_sas(&st) {
            obj.insert("ike_sas".into(), serde_json::from_str(&ike).unwrap());
        }
        if let Some(ike) = fake.ike_stats() {
            obj.insert("ike".into(), ike);
        }
        // Into a buffer that held something before: it is cleared.
        let mut text = b"{\"stale\":1}".to_vec();
        status_json(&fake, &mut text).unwrap();
        let got: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&text));
        // Every key once (the spliced keys are not the engine's).
        let keys = serde_json::from_slice::<serde_json::Map<String, Value>>(&text)
            .unwrap()
            .len();
        assert_eq!(keys, want.as_object().unwrap().len());
        // The one-shot `status` answers the same object.
        assert_eq!(dispatch(&fake, Request::Status {}).result.unwrap(), want);
    }
    let with = {
        let mut t = Vec::new();
        status_json(&Fake::with_daemon_keys(), &mut t).unwrap();
        serde_json::from_slice::<Value>(&t).unwrap()
    };
    for key in [
        "configured_interfaces",
        "netlink",
        "ike_sas",
        "ike",
        "sas",
        "tun",
    ] {
        assert!(with.get(key).is_some(), "{key} missing: {with}");
    }
    let mut t = b"[1]".to_vec();
    assert!(add_key(&mut t, "t").is_err(), "not an object");
    let mut t = b"{}".to_vec();
    add_key(&mut t, "t").unwrap();
    assert_eq!(t, b"{\"t\":");
}

/// Two subscribers of `status --watch` at the same interval share the samples (one status
/// per tick for both: the same `t`), and each sample is the whole status with `t`.
#[test]
fn watchers_at_one_interval_share_each_tick_s_sample() {
    let path = temp_socket("share");
    let fake = Arc::new(Fake::with_daemon_keys());
    let f = Arc::clone(&fake);
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let m = Arc::clone(&made);
    let f2 = Arc::clone(&fake);
    let _server = Listener::bind(&path, Access::default())
        .unwrap()
        .with_status(move |out| {
            m.fetch_add(1, Ordering::Relaxed);
            status_json(&*f2, out)
        })
        .serve(move |_peer, req| dispatch(&*f, req))
        .unwrap();
    let open = || {
        let s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (&s).write_all(b"{\"cmd\":\"watch\",\"interval_ms\":50}\n")
            .unwrap();
        let mut r = BufReader::new(s);
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
        assert!(first.contains("\"ok\":true"), "{first}");
        r
    };
    let (mut a, mut b) = (open(), open());
    let read_t = |r: &mut BufReader<UnixStream>| -> Vec<String> {
        (0..12)
            .map(|_| {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                let v: Value = serde_json::from_str(&l).unwrap();
                assert!(v["ike_sas"].is_array() && v["tun"] == "mifsec0", "{l}");
                v["t"].to_string()
            })
            .collect()
    };
    let ta = read_t(&mut a);
    let tb = read_t(&mut b);
    // Each subscriber's first sample is its own; the ticks after are shared.
    let common = tb.iter().filter(|t| ta.contains(t)).count();
    assert!(common >= 5, "{common} samples shared: {ta:?} / {tb:?}");
    assert!(
        made.load(Ordering::Relaxed) < 24,
        "{} statuses made for 24 samples",
        made.load(Ordering::Relaxed)
    );
}
