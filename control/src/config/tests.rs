//! Unit tests of the configuration parser: the documented example, and one test per kind of
//! error with its exact line and key path.

use super::*;

/// The TOML example of docs/CONFIG.md, taken from the document itself so that they agree.
fn doc_example() -> String {
    let doc = include_str!("../../../docs/CONFIG.md");
    let start = doc.find("```toml\n").expect("CONFIG.md has a toml example") + "```toml\n".len();
    let len = doc[start..].find("```").expect("the example ends");
    doc[start..start + len].to_owned()
}

fn err(text: &str) -> String {
    match parse("gw.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn pfx(s: &str) -> Prefix {
    s.parse().unwrap()
}

/// A small valid file; error tests below change one thing in it. Line numbers:
const BASE: &str = r#"[dataplane]
workers = 2
control_socket = "/tmp/x.sock"

[interfaces.link1]
address = "198.18.1.2"

[sa.a]
spi_out = 0x1001
key_out = "000102030405060708090a0b0c0d0e0f10111213"
spi_in = 0x2001
key_in = "101112131415161718191a1b1c1d1e1f20212223"
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]

[[sa.a.paths]]
interface = "link1"
remote = "198.18.1.1:4500"
"#;

/// `BASE` with line `n` (1-based) replaced by `with`.
fn edit(n: usize, with: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines[n - 1] = with;
    lines.join("\n") + "\n"
}

/// `BASE` with `extra` appended.
fn plus(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn doc_example_parses_to_the_expected_engine_config() {
    let cfg = parse("client.toml", &doc_example()).unwrap();
    let e = &cfg.engine;
    assert_eq!(cfg.control_socket, PathBuf::from("/run/mifsec/client.sock"));
    assert_eq!(e.workers, EngineConfig::default().workers);
    assert_eq!(
        e.tun,
        TunConfig {
            name: "mifsec0".into(),
            queues: e.workers,
            mtu: 1400,
            offloads: true
        }
    );
    assert_eq!(e.addresses, vec![pfx("10.1.0.1/32")]);
    assert!(e.routes.is_empty());
    assert_eq!(e.replay_window, 65_536);
    assert_eq!(e.backend, Backend::Ring);
    assert_eq!(e.probe_interval, Duration::from_millis(50));
    assert_eq!(e.dead_after, Duration::from_millis(200));
    assert_eq!(e.keepalive, Duration::from_secs(20));
    assert_eq!(
        e.interfaces,
        vec![
            InterfaceConfig {
                name: "link1".into(),
                device: Some("veth-c1".into()),
                address: "198.18.1.2".parse().unwrap(),
                port: 4500,
            },
            InterfaceConfig {
                name: "link2".into(),
                device: Some("veth-c2".into()),
                address: "198.18.2.2".parse().unwrap(),
                port: 4500,
            },
        ]
    );
    assert_eq!(e.sas.len(), 1);
    let sa = &e.sas[0];
    assert_eq!(sa.name, "tunnel");
    assert_eq!(sa.mode, Mode::Tunnel);
    assert_eq!(sa.cipher, Cipher::Aes128Gcm);
    assert!(sa.esn);
    assert_eq!(sa.spi_out, 0x1001);
    assert_eq!(sa.spi_in, 0x2001);
    assert_eq!(
        &**sa.key_out,
        &hex::decode("000102030405060708090a0b0c0d0e0f10111213").unwrap()[..]
    );
    assert_eq!(
        &**sa.key_in,
        &hex::decode("101112131415161718191a1b1c1d1e1f20212223").unwrap()[..]
    );
    assert_eq!(sa.local_ts, vec![pfx("10.1.0.0/24")]);
    assert_eq!(sa.remote_ts, vec![pfx("10.2.0.0/24")]);
    assert_eq!(sa.policy, Policy::Aggregate);
    assert_eq!(
        sa.reorder,
        Duration::from_millis(50),
        "the default with policy aggregate"
    );
    assert_eq!(
        sa.paths,
        vec![
            PathSpec {
                name: "fast".into(),
                interface: "link1".into(),
                remote: "198.18.1.1:4500".parse().unwrap(),
                role: Role::Active,
                weight: 300,
                pin: vec![],
                verify: false,
            },
            PathSpec {
                name: "slow".into(),
                interface: "link2".into(),
                remote: "198.18.2.1:4500".parse().unwrap(),
                role: Role::Active,
                weight: 100,
                pin: vec![],
                verify: false,
            },
        ]
    );
}

#[test]
fn every_key_is_read() {
    let text = r#"
[dataplane]
workers = 3
tun = "mif7"
mtu = 1380
offloads = false
addresses = ["10.1.0.1/32", "fd00::1/128"]
routes = ["10.2.0.9/24"]
control_socket = "/tmp/m.sock"
replay_window = 1048576
backend = "rustcrypto"
probe_interval_ms = 0
dead_after_ms = 1000
keepalive_s = 5

[interfaces.v6]
device = "eth0"
address = "2001:db8::2"
port = 14500

[sa.t]
mode = "transport"
cipher = "chacha20poly1305"
esn = false
spi_out = 4096
key_out = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223"
spi_in = 8192
key_in = "AA0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223"
local_ts = ["2001:db8:1::/48"]
remote_ts = ["2001:db8:2::/48", "10.9.0.0/16"]
policy = "pinned"
reorder_ms = 20

[[sa.t.paths]]
interface = "v6"
remote = "[2001:db8::1]:4500"
role = "standby"
weight = 7
pin = ["2001:db8:2::/64"]

[[sa.t.paths]]
name = "alt"
interface = "v6"
remote = "[2001:db8::3]:4500"
role = "alternate"
"#;
    let cfg = parse("t.toml", text).unwrap();
    let e = &cfg.engine;
    assert_eq!(e.workers, 3);
    assert_eq!(
        e.tun,
        TunConfig {
            name: "mif7".into(),
            queues: 3,
            mtu: 1380,
            offloads: false
        }
    );
    assert_eq!(e.addresses, vec![pfx("10.1.0.1/32"), pfx("fd00::1/128")]);
    assert_eq!(e.routes, vec![pfx("10.2.0.0/24")], "host bits are cleared");
    assert_eq!(cfg.control_socket, PathBuf::from("/tmp/m.sock"));
    assert_eq!(e.replay_window, 1 << 20);
    assert_eq!(e.backend, Backend::RustCrypto);
    assert_eq!(e.probe_interval, Duration::ZERO);
    assert_eq!(e.dead_after, Duration::from_secs(1));
    assert_eq!(e.keepalive, Duration::from_secs(5));
    assert_eq!(e.interfaces[0].device.as_deref(), Some("eth0"));
    assert_eq!(e.interfaces[0].port, 14500);
    let sa = &e.sas[0];
    assert_eq!(sa.mode, Mode::Transport);
    assert_eq!(sa.cipher, Cipher::ChaCha20Poly1305);
    assert!(!sa.esn);
    assert_eq!(sa.key_out.len(), 36);
    assert_eq!(sa.key_in[0], 0xaa);
    assert_eq!(
        sa.remote_ts,
        vec![pfx("2001:db8:2::/48"), pfx("10.9.0.0/16")]
    );
    assert_eq!(sa.policy, Policy::Pinned);
    assert_eq!(sa.reorder, Duration::from_millis(20));
    assert_eq!(sa.paths[0].name, "p1");
    assert_eq!(sa.paths[0].role, Role::Standby);
    assert_eq!(sa.paths[0].weight, 7);
    assert_eq!(sa.paths[0].pin, vec![pfx("2001:db8:2::/64")]);
    assert_eq!(sa.paths[1].name, "alt");
    assert_eq!(sa.paths[1].role, Role::Alternate);
    assert_eq!(sa.paths[1].weight, 1);
}

#[test]
fn an_empty_file_is_a_valid_config() {
    let cfg = parse("e.toml", "").unwrap();
    assert_eq!(cfg.control_socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(cfg.engine.tun.name, DEFAULT_TUN);
    assert!(cfg.engine.sas.is_empty());
}

#[test]
fn base_is_valid() {
    parse("gw.toml", BASE).unwrap();
}

#[test]
fn keys_never_appear_in_debug_summary_or_errors() {
    let cfg = parse("client.toml", &doc_example()).unwrap();
    let dbg = format!("{cfg:?}");
    let sum = summary(&cfg);
    for k in [
        "000102030405060708090a0b0c0d0e0f10111213",
        "101112131415161718191a1b1c1d1e1f20212223",
    ] {
        assert!(!dbg.contains(k) && !dbg.contains(&k[..8]), "{dbg}");
        assert!(!sum.contains(k) && !sum.contains(&k[..8]), "{sum}");
    }
    assert!(!dbg.contains("[0, 1, 2, 3"), "{dbg}");
    for bad in [
        edit(10, r#"key_out = "000102030405060708090a0b0c0d0e0f101112""#),
        edit(
            10,
            r#"key_out = "000102030405060708090a0b0c0d0e0f1011121z""#,
        ),
        edit(12, r#"key_in = "000102030405060708090a0b0c0d0e0f10111213""#),
    ] {
        let e = err(&bad);
        assert!(!e.contains("0001020304"), "{e}");
    }
}

#[test]
fn syntax_error() {
    assert_eq!(
        err("[dataplane]\nworkers = 2\n\n[sa.a\n"),
        "gw.toml:4: invalid table header; expected `.`, `]`"
    );
}

#[test]
fn duplicate_key() {
    assert_eq!(
        err(&edit(11, "spi_in = 0x2001\nspi_in = 0x2002")),
        "gw.toml:12: duplicate key `spi_in` in table `sa.a`"
    );
}

#[test]
fn unknown_keys() {
    assert_eq!(
        err(&edit(2, "wrkers = 2")),
        "gw.toml:2: dataplane.wrkers: unknown key (expected one of `workers`, `tun`, `mtu`, `offloads`, \
         `addresses`, `routes`, `control_socket`, `control_group`, `state_dir`, `replay_window`, \
         `backend`, `probe_interval_ms`, `dead_after_ms`, `keepalive_s`, `subscriber_timeout_s`, `test_seq_limit`, `user`)"
    );
    assert!(
        err(&edit(6, "adress = \"198.18.1.2\""))
            .starts_with("gw.toml:6: interfaces.link1.adress: unknown key")
    );
    assert!(
        err(&edit(
            14,
            "remote_ts = [\"10.2.0.0/24\"]\nplicy = \"aggregate\""
        ))
        .starts_with("gw.toml:15: sa.a.plicy: unknown key")
    );
    assert!(
        err(&plus("wieght = 3\n")).starts_with("gw.toml:19: sa.a.paths[0].wieght: unknown key")
    );
    assert!(err(&plus("[conections.x]\n")).starts_with("gw.toml:19: conections: unknown key"));
}

#[test]
fn missing_keys() {
    assert_eq!(err(&edit(11, "")), "gw.toml:8: sa.a.spi_in: is required");
    assert_eq!(
        err(&edit(6, "port = 4500")),
        "gw.toml:5: interfaces.link1.address: is required without a device (whose addresses are then followed)"
    );
    assert_eq!(
        err(&plus("[[sa.a.paths]]\ninterface = \"link1\"\n")),
        "gw.toml:19: sa.a.paths[1].remote: is required"
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        err(&edit(2, "workers = \"2\"")),
        "gw.toml:2: dataplane.workers: invalid type: string \"2\", expected i64"
    );
    assert_eq!(
        err(&edit(9, "spi_out = \"0x1001\"")),
        "gw.toml:9: sa.a.spi_out: invalid type: string \"0x1001\", expected i64"
    );
    assert_eq!(
        err(&edit(13, "local_ts = \"10.1.0.0/24\"")),
        "gw.toml:13: sa.a.local_ts: invalid type: string \"10.1.0.0/24\", expected a sequence"
    );
    assert_eq!(
        err(&edit(10, "key_out = 5")),
        "gw.toml:10: sa.a.key_out: invalid type: integer, expected a string"
    );
}

#[test]
fn bad_remote_address() {
    assert_eq!(
        err(&edit(18, "remote = \"198.18.1.2\"")),
        "gw.toml:18: sa.a.paths[0].remote: \"198.18.1.2\" is not an address:port"
    );
}

#[test]
fn remote_family_must_match_the_interface() {
    assert_eq!(
        err(&edit(18, "remote = \"[2001:db8::1]:4500\"")),
        "gw.toml:18: sa.a.paths[0].remote: [2001:db8::1]:4500 is IPv6 but interface link1 is IPv4"
    );
}

#[test]
fn bad_interface_address() {
    assert_eq!(
        err(&edit(6, "address = \"198.18.1\"")),
        "gw.toml:6: interfaces.link1.address: \"198.18.1\" is not an IP address"
    );
}

#[test]
fn two_interfaces_on_one_address_and_port() {
    assert_eq!(
        err(&edit(7, "[interfaces.link2]\naddress = \"198.18.1.2\"\n")),
        "gw.toml:8: interfaces.link2.address: 198.18.1.2:4500 is also interfaces.link1's address and port"
    );
}

#[test]
fn bad_port() {
    assert_eq!(
        err(&edit(6, "address = \"198.18.1.2\"\nport = 70000")),
        "gw.toml:7: interfaces.link1.port: must be 0 to 65535, got 70000"
    );
}

#[test]
fn bad_selector() {
    assert_eq!(
        err(&edit(14, "remote_ts = [\"10.2.0.0/24\", \"10.3.0.0/33\"]")),
        "gw.toml:14: sa.a.remote_ts[1]: \"10.3.0.0/33\": prefix length must be 0 to 32"
    );
    assert_eq!(
        err(&edit(13, "local_ts = [\"ten\"]")),
        "gw.toml:13: sa.a.local_ts[0]: \"ten\" is not an address or prefix"
    );
    assert_eq!(
        err(&edit(13, "local_ts = []")),
        "gw.toml:13: sa.a.local_ts: needs at least one selector"
    );
    assert_eq!(
        err(&edit(3, "addresses = [\"10.1.0.1/40\"]")),
        "gw.toml:3: dataplane.addresses[0]: \"10.1.0.1/40\": prefix length must be 0 to 32"
    );
}

#[test]
fn key_not_hex() {
    assert_eq!(
        err(&edit(
            10,
            r#"key_out = "000102030405060708090a0b0c0d0e0f1011121z""#
        )),
        "gw.toml:10: sa.a.key_out: is not a string of hex digits (key || salt)"
    );
}

#[test]
fn key_of_the_wrong_length() {
    assert_eq!(
        err(&edit(
            12,
            r#"key_in = "101112131415161718191a1b1c1d1e1f202122""#
        )),
        "gw.toml:12: sa.a.key_in: aes128gcm16 needs 20 bytes (40 hex digits) of key || salt, got 19 bytes"
    );
    // 20 bytes are too few for the 256-bit ciphers.
    for cipher in ["aes256gcm16", "chacha20poly1305"] {
        assert_eq!(
            err(&edit(8, &format!("[sa.a]\ncipher = \"{cipher}\""))),
            format!(
                "gw.toml:11: sa.a.key_out: {cipher} needs 36 bytes (72 hex digits) of key || salt, got 20 bytes"
            )
        );
    }
}

#[test]
fn one_key_twice() {
    assert_eq!(
        err(&edit(
            12,
            r#"key_in = "000102030405060708090A0B0C0D0E0F10111213""#
        )),
        "gw.toml:12: sa.a.key_in: same key as sa.a.key_out: a key must never serve two SAs or directions"
    );
}

#[test]
fn spi_out_of_range() {
    assert_eq!(
        err(&edit(9, "spi_out = 255")),
        "gw.toml:9: sa.a.spi_out: an SPI is 256 to 4294967295 (0x100 to 0xffffffff), got 255"
    );
    assert_eq!(
        err(&edit(11, "spi_in = 0x100000000")),
        "gw.toml:11: sa.a.spi_in: an SPI is 256 to 4294967295 (0x100 to 0xffffffff), got 4294967296"
    );
}

#[test]
fn spis_must_be_distinct() {
    let second = r#"
[sa.b]
spi_out = 0x1002
key_out = "200102030405060708090a0b0c0d0e0f10111213"
spi_in = 0x2001
key_in = "301112131415161718191a1b1c1d1e1f20212223"
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.3.0.0/24"]
"#;
    assert_eq!(
        err(&plus(second)),
        "gw.toml:23: sa.b.spi_in: SPI 0x00002001 is also sa.a.spi_in"
    );
}

#[test]
fn path_names_an_unknown_interface() {
    assert_eq!(
        err(&edit(17, "interface = \"link9\"")),
        "gw.toml:17: sa.a.paths[0].interface: no interface named \"link9\" (no [interfaces.link9])"
    );
}

#[test]
fn path_names_are_unique_per_sa() {
    let text = edit(17, "name = \"x\"\ninterface = \"link1\"")
        + "\n[[sa.a.paths]]\nname = \"x\"\ninterface = \"link1\"\nremote = \"198.18.1.3:4500\"\n";
    assert_eq!(
        err(&text),
        "gw.toml:22: sa.a.paths[1].name: \"x\" is also the name of sa.a.paths[0]"
    );
    // A default name ("p2") clashing with a written one.
    let text = edit(17, "name = \"p2\"\ninterface = \"link1\"")
        + "\n[[sa.a.paths]]\ninterface = \"link1\"\nremote = \"198.18.1.3:4500\"\n";
    assert_eq!(
        err(&text),
        "gw.toml:22: sa.a.paths[1].name: the default name \"p2\" is taken; name this path"
    );
}

#[test]
fn replay_window_power_of_two_in_range() {
    for (v, ok) in [
        (64, true),
        (1 << 20, true),
        (32, false),
        (1000, false),
        (1 << 21, false),
    ] {
        let text = edit(2, &format!("replay_window = {v}"));
        if ok {
            parse("gw.toml", &text).unwrap();
        } else {
            assert_eq!(
                err(&text),
                format!(
                    "gw.toml:2: dataplane.replay_window: must be a power of two from 64 to 1048576, got {v}"
                )
            );
        }
    }
}

#[test]
fn workers_at_least_one() {
    assert_eq!(
        err(&edit(2, "workers = 0")),
        "gw.toml:2: dataplane.workers: must be 1 to 1024, got 0"
    );
}

#[test]
fn bad_enumerations() {
    assert_eq!(
        err(&edit(
            14,
            "remote_ts = [\"10.2.0.0/24\"]\npolicy = \"fastest\""
        )),
        "gw.toml:15: sa.a.policy: \"fastest\": policy is failover, aggregate, redundant or pinned"
    );
    assert_eq!(
        err(&plus("role = \"backup\"\n")),
        "gw.toml:19: sa.a.paths[0].role: \"backup\": role is active, standby or alternate"
    );
    assert_eq!(
        err(&edit(8, "[sa.a]\ncipher = \"aes\"")),
        "gw.toml:9: sa.a.cipher: \"aes\": cipher is aes128gcm16, aes256gcm16 or chacha20poly1305"
    );
    assert_eq!(
        err(&edit(8, "[sa.a]\nmode = \"beet\"")),
        "gw.toml:9: sa.a.mode: \"beet\": mode is tunnel or transport"
    );
    assert_eq!(
        err(&edit(2, "backend = \"openssl\"")),
        "gw.toml:2: dataplane.backend: \"openssl\": backend is ring or rustcrypto"
    );
}

#[test]
fn bad_names() {
    assert_eq!(
        err(&edit(8, "[sa.\"my sa\"]").replace("[[sa.a.paths]]", "[[sa.\"my sa\".paths]]")),
        "gw.toml:8: sa.my sa: \"my sa\": SA names are 1 to 32 letters, digits, '-' or '_'"
    );
    assert_eq!(
        err(&edit(3, "tun = \"a-very-long-device-name\"")),
        "gw.toml:3: dataplane.tun: \"a-very-long-device-name\" is not a device name (1 to 15 bytes, no '/' or space)"
    );
}

#[test]
fn weight_in_range() {
    assert_eq!(
        err(&plus("weight = 0\n")),
        "gw.toml:19: sa.a.paths[0].weight: must be 1 to 1000000, got 0"
    );
}

#[test]
fn load_names_the_file_and_reads_it() {
    let e = load(Path::new("/nonexistent/gw.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/gw.toml: cannot read: "), "{e}");
    let dir = std::env::temp_dir().join(format!("mifsec-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("gw.toml");
    std::fs::write(&f, edit(18, "remote = \"198.18.1.2\"")).unwrap();
    let e = load(&f).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:18: sa.a.paths[0].remote: \"198.18.1.2\" is not an address:port",
            f.display()
        )
    );
    std::fs::write(&f, BASE).unwrap();
    let cfg = load(&f).unwrap();
    assert_eq!(cfg.engine.sas.len(), 1);
    assert_eq!(
        cfg.engine.sas[0].reorder,
        Duration::ZERO,
        "the default with policy failover"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn implicit_sa_table() {
    let text = "[interfaces.l]\naddress = \"198.18.1.2\"\n\n[[sa.x.paths]]\ninterface = \"l\"\nremote = \"198.18.1.1:4500\"\n";
    assert_eq!(err(text), "gw.toml:4: sa.x.spi_out: is required");
}

#[test]
fn bad_interface_name() {
    assert_eq!(
        err(&edit(5, "[interfaces.\"link.1\"]")),
        "gw.toml:5: interfaces.link.1: \"link.1\": interface names are 1 to 32 letters, digits, '-' or '_'"
    );
}

/// `BASE` plus an IKE client connection. Lines 19 onwards:
const IKE: &str = r#"
[connections.home]
remote_addrs = ["198.18.1.1"]
vips = ["0.0.0.0"]
proposals = ["aes128gcm16-prfsha256-x25519"]
start_action = "start"

[connections.home.local]
auth = "psk"
id = "cl"

[connections.home.remote]
id = "gw"

[connections.home.children.net]
remote_ts = ["10.88.0.0/16"]
esp_proposals = ["aes128gcm16"]

[secrets.ike-1]
id = ["cl", "gw"]
secret = "hunter2-lab-secret"

[pools.p4]
addrs = "10.77.0.0/24"
"#;

#[test]
fn ike_connection() {
    use crate::ike::{EsnPolicy, Mode as IkeMode};
    use crate::wire::{DhGroup, IdPayload};
    let cfg = parse("cl.toml", &plus(IKE)).unwrap();
    assert_eq!(cfg.engine.sas.len(), 1, "manual SAs still work beside IKE");
    let [c] = cfg.ike.connections.as_slice() else {
        panic!("one connection")
    };
    assert_eq!(c.name, "home");
    assert!(c.start && c.vips && c.pools.is_empty());
    assert_eq!(
        c.remote_addrs,
        vec!["198.18.1.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(c.children, vec!["net".to_owned()]);
    let ike = &c.ike;
    assert_eq!(ike.local_id, IdPayload::fqdn("cl"));
    assert_eq!(ike.remote_id, Some(IdPayload::fqdn("gw")));
    let crate::ike::auth::LocalAuth::Psk(psk) = &ike.local_auth else {
        panic!("psk expected")
    };
    assert_eq!(&psk[..], b"hunter2-lab-secret");
    assert!(ike.force_encap, "encap defaults to true");
    assert!(ike.request_vip);
    assert_eq!(ike.proposals[0].groups, vec![DhGroup::Curve25519]);
    assert_eq!(ike.child.proposals[0].ciphers, vec![Cipher::Aes128Gcm]);
    assert_eq!(ike.child.proposals[0].esn, EsnPolicy::No);
    assert_eq!(ike.child.mode, IkeMode::Tunnel);
    assert_eq!(
        ike.child.local_ts,
        vec![crate::wire::TrafficSelector::ipv4_any()]
    );
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("hunter2"), "Debug shows no PSK");
    let sum = summary(&cfg);
    assert!(
        sum.contains("connection home: %any === 198.18.1.1, start, vip requested"),
        "{sum}"
    );
}

#[test]
fn ike_errors() {
    let ike = |from: &str, to: &str| {
        assert!(IKE.contains(from), "{from}");
        err(&plus(&IKE.replace(from, to)))
    };
    assert_eq!(
        ike("aes128gcm16-prfsha256-x25519", "aes128gcm16-prfsha256"),
        "gw.toml:23: connections.home.proposals[0]: \"aes128gcm16-prfsha256\": an IKE proposal needs an AEAD, a PRF and a DH group"
    );
    assert_eq!(
        ike("auth = \"psk\"", "auth = \"eap-ttls\""),
        "gw.toml:27: connections.home.local.auth: \"eap-ttls\": auth is psk, pubkey (rsa, ecdsa, ed25519, rsa/pss), eap-mschapv2 or eap-tls"
    );
    assert_eq!(
        ike("auth = \"psk\"", "auth = \"eap-md5\""),
        "gw.toml:27: connections.home.local.auth: \"eap-md5\": of EAP methods only eap-mschapv2 and eap-tls are supported"
    );
    // EAP-TLS without a client certificate.
    assert_eq!(
        ike("auth = \"psk\"", "auth = \"eap-tls\""),
        "gw.toml:20: connections.home.local.certs: local.auth = \"eap-tls\" needs local.certs (the client certificate)"
    );
    // EAP without the password, an eap_id where auth is not EAP.
    assert_eq!(
        ike(
            "auth = \"psk\"",
            "auth = \"eap-mschapv2\"\neap_id = \"carol\""
        ),
        "gw.toml:27: connections.home.local.auth: no [secrets.eap-*] with id \"carol\" (EAP needs the password)"
    );
    assert_eq!(
        ike("auth = \"psk\"", "auth = \"psk\"\neap_id = \"carol\""),
        "gw.toml:28: connections.home.local.eap_id: is for local.auth = \"eap-mschapv2\""
    );
    assert!(
        ike("id = [\"cl\", \"gw\"]", "id = [\"x\"]")
            .starts_with("gw.toml:20: connections.home: no [secrets.*] with id \"cl\"")
    );
    assert_eq!(
        ike("start_action = \"start\"", "start_action = \"trap\""),
        "gw.toml:24: connections.home.start_action: \"trap\": start_action is start or none"
    );
    assert_eq!(
        ike("vips = [\"0.0.0.0\"]", "pools = [\"p6\"]"),
        "gw.toml:22: connections.home.pools[0]: no pool named \"p6\" (no [pools.p6])"
    );
    assert_eq!(
        ike(
            "remote_ts = [\"10.88.0.0/16\"]",
            "remote_ts = [\"10.88.0.0/33\"]"
        ),
        "gw.toml:34: connections.home.children.net.remote_ts[0]: \"10.88.0.0/33\": bad prefix length"
    );
    assert!(
        ike("remote_addrs", "remote_adrs")
            .starts_with("gw.toml:21: connections.home.remote_adrs: unknown key")
    );
    assert_eq!(
        ike(
            "remote_addrs = [\"198.18.1.1\"]",
            "local_addrs = [\"198.18.1.9\"]"
        ),
        "gw.toml:21: connections.home.local_addrs[0]: 198.18.1.9 is no [interfaces.*] address"
    );
    let e = ike("vips = [\"0.0.0.0\"]", "vips = [\"10.0.0.1\"]");
    assert!(
        e.starts_with("gw.toml:22: connections.home.vips[0]: \"10.0.0.1\": vips are 0.0.0.0"),
        "{e}"
    );
    assert!(!e.contains("hunter2"));
}

#[test]
fn doc_ike_example_parses() {
    let doc = include_str!("../../../docs/CONFIG.md");
    let at = doc
        .find("road-warrior client")
        .expect("CONFIG.md has the IKE example");
    let start = at + doc[at..].find("```toml\n").unwrap() + "```toml\n".len();
    let len = doc[start..].find("```").unwrap();
    let cfg = parse("client.toml", &doc[start..start + len]).unwrap();
    let c = &cfg.ike.connections[0];
    assert_eq!((c.name.as_str(), c.start, c.vips), ("home", true, true));
}

#[test]
fn ike_fragmentation_keys() {
    let frag = |text: &str| {
        let cfg = parse("cl.toml", text).unwrap();
        let ike = &cfg.ike.connections[0].ike;
        (ike.fragmentation, ike.fragment_size)
    };
    assert_eq!(frag(&plus(IKE)), (true, 1280), "defaults as strongSwan's");
    let conn = |lines: &str| {
        IKE.replace(
            "start_action = \"start\"",
            &format!("start_action = \"start\"\n{lines}"),
        )
    };
    assert_eq!(
        frag(&plus(&conn("fragmentation = \"no\"\nfragment_size = 576"))),
        (false, 576)
    );
    // The daemon-wide default, and a connection's own value over it.
    let daemon = plus(&format!("{IKE}\n[ike]\nfragment_size = 400\n"));
    assert_eq!(frag(&daemon), (true, 400));
    let both = plus(&format!(
        "{}\n[ike]\nfragment_size = 400\n",
        conn("fragment_size = 1400")
    ));
    assert_eq!(frag(&both), (true, 1400));
    let e = err(&plus(&conn("fragmentation = \"force\"")));
    assert!(
        e.contains("connections.home.fragmentation") && e.contains("yes or no"),
        "{e}"
    );
    let e = err(&plus(&conn("fragment_size = 100")));
    assert!(e.contains("connections.home.fragment_size"), "{e}");
    let e = err(&plus(&format!("{IKE}\n[ike]\nfragment_size = 70000\n")));
    assert!(e.contains("ike.fragment_size"), "{e}");
}

/// An IKE file whose secret is `secret` (a TOML value as written).
fn with_secret(secret: &str) -> String {
    format!(
        "[connections.c]\nremote_addrs = [\"192.0.2.1\"]\n[connections.c.local]\nid = \"a\"\n\
         [connections.c.children.n]\n[secrets.s]\nid = [\"a\"]\nsecret = {secret}\n"
    )
}

#[test]
fn a_wrong_type_in_a_secret_or_key_never_shows_its_value() {
    for (v, kind) in [
        ("987654321", "integer"),
        ("98765.4321", "floating point"),
        ("true", "boolean"),
        ("[987654321, 55]", "sequence"),
        ("{ x = \"987654321\" }", "map"),
        ("1987-07-05T17:45:00Z", "map"),
    ] {
        let e = err(&with_secret(v));
        assert_eq!(
            e,
            format!("gw.toml:8: secrets.s.secret: invalid type: {kind}, expected a string"),
            "{v}"
        );
        for k in ["key_out", "key_in"] {
            let line = if k == "key_out" { 10 } else { 12 };
            let e = err(&edit(line, &format!("{k} = {v}")));
            assert_eq!(
                e,
                format!("gw.toml:{line}: sa.a.{k}: invalid type: {kind}, expected a string"),
                "{v}"
            );
        }
    }
    // Syntax errors in a secret do not quote it either.
    for v in [
        "\"987654321",
        "\"987654321\" 55",
        "'987654321",
        "\"9876\\q54321\"",
    ] {
        let e = err(&with_secret(v));
        assert!(e.starts_with("gw.toml:8: "), "{e}");
        for digits in ["987654321", "9876", "54321"] {
            assert!(!e.contains(digits), "{v}: {e}");
        }
    }
    // Other keys still quote what was written: it helps and is no secret.
    assert!(err(&edit(2, "workers = true")).contains("`true`"));
}

#[test]
fn a_short_psk_is_warned_about_without_its_value() {
    let cfg = parse("gw.toml", &with_secret("\"0123456789abcdef\"")).unwrap();
    assert_eq!(
        cfg.warnings,
        vec![
            "gw.toml:8: secrets.s.secret: a PSK of 16 bytes is short; use at least 20 random bytes"
                .to_owned()
        ]
    );
    // Hex counts decoded: 0x and 19 bytes is short, 20 is not.
    let cfg = parse(
        "gw.toml",
        &with_secret(&format!("\"0x{}\"", "ab".repeat(19))),
    )
    .unwrap();
    assert!(
        cfg.warnings[0].contains("a PSK of 19 bytes"),
        "{:?}",
        cfg.warnings
    );
    let cfg = parse(
        "gw.toml",
        &with_secret(&format!("\"0x{}\"", "ab".repeat(20))),
    )
    .unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let cfg = parse("gw.toml", &with_secret("\"a-long-enough-lab-secret\"")).unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert!(cfg.holds_keys());
    assert!(!parse("e.toml", "").unwrap().holds_keys());
    assert!(parse("gw.toml", BASE).unwrap().holds_keys());
}

#[test]
fn a_file_with_keys_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mifsec-cfg-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mode_warnings = |name: &str, text: &str, mode: u32| -> Vec<String> {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let cfg = load(&path).unwrap();
        cfg.warnings
            .into_iter()
            .filter(|w| w.contains("readable"))
            .collect()
    };
    let ike = with_secret("\"a-long-enough-lab-secret\"");
    assert!(mode_warnings("ike.toml", &ike, 0o600).is_empty());
    assert!(mode_warnings("ike.toml", &ike, 0o620).is_empty());
    let w = mode_warnings("ike.toml", &ike, 0o644);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].ends_with(
            "holds keys or secrets but is readable by group and others (mode 0644); chmod 600 it"
        ),
        "{w:?}"
    );
    assert!(
        mode_warnings("ike.toml", &ike, 0o640)[0].contains("readable by its group (mode 0640)")
    );
    assert!(mode_warnings("sa.toml", BASE, 0o604)[0].contains("readable by others (mode 0604)"));
    // No keys, no warning.
    assert!(mode_warnings("plain.toml", "[dataplane]\nworkers = 1\n", 0o644).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn control_group() {
    assert_eq!(parse("e.toml", "").unwrap().control_group, None);
    let cfg = parse("g.toml", "[dataplane]\ncontrol_group = \"mifsec\"\n").unwrap();
    assert_eq!(cfg.control_group.as_deref(), Some("mifsec"));
    assert!(summary(&cfg).contains("control socket /run/mifsec/mifsec.sock, group mifsec"));
    let cfg = parse("g.toml", "[dataplane]\ncontrol_group = \"998\"\n").unwrap();
    assert_eq!(cfg.control_group.as_deref(), Some("998"));
    assert_eq!(
        err("[dataplane]\ncontrol_group = \"a b\"\n"),
        "gw.toml:2: dataplane.control_group: \"a b\" is not a group name or number (1 to 32 \
         letters, digits, '-', '_' or '.')"
    );
}

#[test]
fn an_interface_with_only_a_device_follows_its_addresses() {
    let text = plus(
        "\n[interfaces.wan]\ndevice = \"wlan0\"\n\n[interfaces.lte]\ndevice = \"wwan0\"\nport = 4501\n",
    );
    let cfg = parse("gw.toml", &text).unwrap();
    assert_eq!(cfg.engine.interfaces.len(), 1, "the fixed one only");
    assert_eq!(
        cfg.followed,
        vec![
            FollowedInterface {
                name: "wan".into(),
                device: "wlan0".into(),
                port: 4500
            },
            FollowedInterface {
                name: "lte".into(),
                device: "wwan0".into(),
                port: 4501
            },
        ]
    );
    let sum = summary(&cfg);
    assert!(
        sum.contains("interface wan: the addresses of wlan0, port 4500 (learned and followed)\n"),
        "{sum}"
    );
    // A fixed address on the same device still works as before.
    let text = plus(
        "\n[interfaces.wan]\ndevice = \"wlan0\"\n\n[interfaces.wan2]\ndevice = \"wlan0\"\naddress = \"198.18.3.2\"\n",
    );
    let cfg = parse("gw.toml", &text).unwrap();
    assert_eq!(
        cfg.engine.interfaces[1].address,
        "198.18.3.2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(cfg.followed.len(), 1);
}

#[test]
fn interface_priority_and_alternate() {
    let text = plus(
        "\n[interfaces.wan]\ndevice = \"wlan0\"\npriority = 10\nalternate = true\n\n\
         [interfaces.link2]\naddress = \"198.18.2.2\"\npriority = 255\n",
    );
    let cfg = parse("gw.toml", &text).unwrap();
    let p = |n: &str| Config::prefs_of(&cfg.interface_prefs, n);
    assert_eq!(p("link1"), InterfacePrefs::default(), "the defaults");
    assert_eq!(
        p("link2"),
        InterfacePrefs {
            priority: 255,
            alternate: false
        }
    );
    let wan = InterfacePrefs {
        priority: 10,
        alternate: true,
    };
    assert_eq!(p("wan"), wan);
    assert_eq!(p("wan.2"), wan, "a followed interface's further addresses");
    assert_eq!(p("nothing"), InterfacePrefs::default());
    assert_eq!(
        err(&edit(6, "address = \"198.18.1.2\"\npriority = 256")),
        "gw.toml:7: interfaces.link1.priority: must be 0 to 255, got 256"
    );
    assert_eq!(
        err(&edit(6, "address = \"198.18.1.2\"\npriority = -1")),
        "gw.toml:7: interfaces.link1.priority: must be 0 to 255, got -1"
    );
    assert!(
        err(&edit(6, "address = \"198.18.1.2\"\nalternate = 1"))
            .starts_with("gw.toml:7: interfaces.link1.alternate: invalid type"),
    );
}

#[test]
fn followed_interfaces_errors() {
    // Two sections following one device on one port would bind every address twice.
    assert_eq!(
        err(&plus(
            "\n[interfaces.a]\ndevice = \"wlan0\"\n\n[interfaces.b]\ndevice = \"wlan0\"\n"
        )),
        "gw.toml:24: interfaces.b.device: interfaces.a follows wlan0's addresses on port 4500 already"
    );
    assert!(parse(
        "gw.toml",
        &plus("\n[interfaces.a]\ndevice = \"wlan0\"\n\n[interfaces.b]\ndevice = \"wlan0\"\nport = 4501\n")
    )
    .is_ok());
    // A manual SA's path needs a fixed address (its family and its socket are known).
    let text = edit(17, "interface = \"wan\"") + "\n[interfaces.wan]\ndevice = \"wlan0\"\n";
    assert_eq!(
        err(&text),
        "gw.toml:17: sa.a.paths[0].interface: interfaces.wan follows its device's addresses; a manually keyed SA's path needs an interface with a fixed address"
    );
}

/// A folder with a CA, a gateway certificate and its key (rcgen), for the pubkey tests.
fn pki_dir(tag: &str) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let dir = std::env::temp_dir().join(format!("mifsec-pki-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "Lab CA");
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "gw");
    p.subject_alt_names = vec![SanType::DnsName("gw".try_into().unwrap())];
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("gw.der"), cert.der()).unwrap();
    std::fs::write(dir.join("gw.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("other.key"), other.serialize_pem()).unwrap();
    std::fs::write(dir.join("garbage.pem"), "not a certificate\n").unwrap();
    dir
}

/// A responder connection authenticating with the certificate, its peer with one of the CA.
const PUBKEY: &str = r#"
[connections.rw]
pools = ["p4"]

[connections.rw.local]
auth = "pubkey"
certs = ["gw.der"]

[connections.rw.remote]
auth = "pubkey"
cacerts = ["ca.pem"]

[connections.rw.children.net]
local_ts = ["10.1.0.0/16"]

[secrets.private-gw]
file = "gw.key"

[pools.p4]
addrs = "10.77.0.0/24"
"#;

/// A client with EAP-MSCHAPv2 and a gateway asking its users for their EAP identity.
const EAP: &str = r#"
[connections.home]
remote_addrs = ["198.18.1.1"]

[connections.home.local]
auth = "eap-mschapv2"
id = "cl"
eap_id = "carol"

[connections.home.remote]
id = "gw"

[connections.home.children.net]
remote_ts = ["10.88.0.0/16"]

[connections.rw]

[connections.rw.local]
id = "gw"

[connections.rw.remote]
auth = "eap-mschapv2"
eap_id = "%any"

[connections.rw.children.net]
local_ts = ["10.1.0.0/16"]

[secrets.ike-1]
id = ["cl", "gw"]
secret = "hunter2-lab-secret"

[secrets.eap-carol]
id = ["carol"]
secret = "carol's password"

[secrets.eap-dave]
id = ["dave", "DOMAIN\\dave"]
secret = "0x64617665"
"#;

#[test]
fn ike_eap_connections() {
    use crate::ike::auth::{EapMethod, LocalAuth, RemoteAuth};
    let cfg = parse("cl.toml", &plus(EAP)).unwrap();
    let [c, g] = cfg.ike.connections.as_slice() else {
        panic!("two connections")
    };
    let LocalAuth::Eap {
        method,
        identity,
        secret,
        ..
    } = &c.ike.local_auth
    else {
        panic!("EAP expected: {:?}", c.ike.local_auth)
    };
    assert_eq!(*method, EapMethod::Mschapv2);
    assert_eq!(identity.as_deref(), Some(&b"carol"[..]));
    assert_eq!(&secret[..], b"carol's password");
    let RemoteAuth::Eap {
        users,
        ask_identity,
        ..
    } = &g.ike.remote_auth
    else {
        panic!("EAP expected")
    };
    assert!(*ask_identity);
    assert_eq!(users.len(), 2);
    let sum = summary(&cfg);
    assert!(
        sum.contains("local auth eap-mschapv2 (EAP identity 'carol')"),
        "{sum}"
    );
    assert!(
        sum.contains("remote auth eap-mschapv2 (2 users, EAP-Identity asked)"),
        "{sum}"
    );
    // The passwords are in no Debug output.
    let dbg = format!("{cfg:?}");
    assert!(
        !dbg.contains("carol's password") && !dbg.contains("0x6461"),
        "{dbg}"
    );
    // A gateway without users; a remote.eap_id other than %any.
    let no_users = EAP
        .replace("[secrets.eap-carol]", "[secrets.x-carol]")
        .replace("[secrets.eap-dave]", "[secrets.x-dave]")
        .replace(
            "auth = \"eap-mschapv2\"\nid = \"cl\"\neap_id = \"carol\"",
            "id = \"cl\"",
        );
    let e = err(&plus(&no_users));
    assert!(
        e.ends_with("connections.rw.remote.auth: remote.auth = \"eap-mschapv2\" needs [secrets.eap-*] users (id and secret)"),
        "{e}"
    );
    let e = err(&plus(&EAP.replace("eap_id = \"%any\"", "eap_id = \"bob\"")));
    assert!(
        e.contains("connections.rw.remote.eap_id: \"bob\": remote.eap_id is %any"),
        "{e}"
    );
}

#[test]
fn ike_pubkey_connection_and_the_file_that_is_wrong() {
    use crate::ike::auth::{KeyKind, LocalAuth, RemoteAuth};
    let dir = pki_dir("cfg");
    let file = dir.join("gw.toml");
    let name = file.to_str().unwrap().to_owned();
    let cfg = parse(&name, &plus(PUBKEY)).unwrap();
    let ike = &cfg.ike.connections[0].ike;
    let LocalAuth::Pubkey { key, certs, .. } = &ike.local_auth else {
        panic!("pubkey expected")
    };
    assert_eq!(key.kind(), KeyKind::EcdsaP256);
    assert_eq!(certs.len(), 1);
    assert!(matches!(ike.remote_auth, RemoteAuth::Pubkey(_)));
    // No local.id: the certificate's subject DN.
    assert_eq!(ike.local_id.id_type, crate::wire::IdType::DerAsn1Dn);
    let sum = summary(&cfg);
    assert!(
        sum.contains("local auth pubkey (ECDSA P-256, certificate 'CN=gw')"),
        "{sum}"
    );
    assert!(
        sum.contains("remote auth pubkey (CAs 'CN=Lab CA')"),
        "{sum}"
    );
    assert!(!format!("{cfg:?}").contains("PRIVATE"));

    // Also as [authorities.NAME].
    let text =
        PUBKEY.replace("cacerts = [\"ca.pem\"]", "") + "\n[authorities.lab]\ncacert = \"ca.pem\"\n";
    assert!(parse(&name, &plus(&text)).is_ok());

    let bad = |from: &str, to: &str| {
        assert!(PUBKEY.contains(from), "{from}");
        match parse(&name, &plus(&PUBKEY.replace(from, to))) {
            Ok(_) => panic!("accepted {to}"),
            Err(e) => e.to_string().replace(&format!("{}/", dir.display()), ""),
        }
    };
    let e = bad("certs = [\"gw.der\"]", "certs = [\"missing.pem\"]");
    assert!(
        e.contains("connections.rw.local.certs[0]: missing.pem: No such file"),
        "{e}"
    );
    let e = bad("cacerts = [\"ca.pem\"]", "cacerts = [\"garbage.pem\"]");
    assert!(
        e.contains("connections.rw.remote.cacerts[0]: garbage.pem: not an X.509 certificate"),
        "{e}"
    );
    let e = bad("file = \"gw.key\"", "file = \"ca.pem\"");
    assert!(e.contains("secrets.private-gw.file[0]: ca.pem:"), "{e}");
    let e = bad("file = \"gw.key\"", "file = \"other.key\"");
    assert!(
        e.contains("no [secrets.private-*] file holds the private key of this certificate"),
        "{e}"
    );
    let e = bad("file = \"gw.key\"", "id = [\"x\"]");
    assert!(
        e.contains("secrets.private-gw.file: a private key secret needs file"),
        "{e}"
    );
    let e = bad("cacerts = [\"ca.pem\"]", "");
    assert!(
        e.contains("remote.auth = \"pubkey\" needs remote.cacerts"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ike_mif_keys() {
    use mifsec_dataplane::sa_table::Policy;
    let cfg = parse("cl.toml", &plus(IKE)).unwrap();
    let ike = &cfg.ike.connections[0].ike;
    assert_eq!(
        (ike.mif, ike.mif_max_interfaces, ike.mif_max_paths),
        (true, 16, 16),
        "defaults"
    );
    assert_eq!(ike.child.policy, Policy::Failover);
    assert!(ike.child.interfaces.is_empty());
    let conn = |lines: &str| {
        IKE.replace(
            "start_action = \"start\"",
            &format!("start_action = \"start\"\n{lines}"),
        )
    };
    let child = |lines: &str| {
        IKE.replace(
            "esp_proposals = [\"aes128gcm16\"]",
            &format!("esp_proposals = [\"aes128gcm16\"]\n{lines}"),
        )
    };
    let cfg = parse(
        "cl.toml",
        &plus(&conn(
            "mif = false\nmif_max_interfaces = 1\nmif_max_paths = 64",
        )),
    )
    .unwrap();
    let ike = &cfg.ike.connections[0].ike;
    assert_eq!(
        (ike.mif, ike.mif_max_interfaces, ike.mif_max_paths),
        (false, 1, 64)
    );
    let cfg = parse(
        "cl.toml",
        &plus(&child("policy = \"aggregate\"\ninterfaces = [\"link1\"]")),
    )
    .unwrap();
    let c = &cfg.ike.connections[0].ike.child;
    assert_eq!(
        (c.policy, c.interfaces.clone()),
        (Policy::Aggregate, vec!["link1".into()])
    );
    // Errors name the file, line and key.
    for (text, key, what) in [
        (
            conn("mif_max_interfaces = 0"),
            "connections.home.mif_max_interfaces",
            "mif_max",
        ),
        (
            conn("mif_max_interfaces = 65"),
            "connections.home.mif_max_interfaces",
            "mif_max",
        ),
        (
            conn("mif_max_paths = 65"),
            "connections.home.mif_max_paths",
            "mif_max",
        ),
        (
            child("policy = \"fastest\""),
            "connections.home.children.net.policy",
            "policy",
        ),
        (
            child("interfaces = [\"link1\", \"wan9\"]"),
            "connections.home.children.net.interfaces[1]",
            "interfaces",
        ),
    ] {
        let text = plus(&text);
        let line = 1 + text.lines().position(|l| l.starts_with(what)).unwrap();
        let e = err(&text);
        assert!(e.starts_with(&format!("gw.toml:{line}: {key}: ")), "{e}");
    }
    let e = err(&plus(&conn("mif = 1")));
    assert!(e.contains("connections.home.mif"), "{e}");
}

#[test]
fn ike_clone_keys() {
    let cfg = parse("cl.toml", &plus(IKE)).unwrap();
    let c = &cfg.ike.connections[0];
    assert!(c.ike.clone_ike_sa, "clone defaults to true");
    assert!(!c.clone_per_interface && c.ike.clone_children.is_empty());
    let more = IKE.replace(
        "start_action = \"start\"",
        "start_action = \"start\"\nclone = false\nclone_per_interface = true\nclone_children = [\"net2\"]",
    ) + "\n[connections.home.children.net2]\nremote_ts = [\"10.89.0.0/16\"]\n";
    let cfg = parse("cl.toml", &plus(&more)).unwrap();
    let c = &cfg.ike.connections[0];
    assert!(!c.ike.clone_ike_sa && c.clone_per_interface);
    assert_eq!(c.ike.clone_children, vec!["net2".to_owned()]);
    // Only a child of the connection, and not its first.
    for bad in ["net", "nope"] {
        let text = IKE.replace(
            "start_action = \"start\"",
            &format!("start_action = \"start\"\nclone_children = [\"{bad}\"]"),
        );
        let e = err(&plus(&text));
        assert!(
            e.contains("clone_children") && e.contains("is not a child"),
            "{e}"
        );
    }
}

#[test]
fn metrics_listen() {
    assert_eq!(parse("gw.toml", BASE).unwrap().metrics_listen, None);
    let cfg = parse(
        "gw.toml",
        &plus("\n[metrics]\nlisten = \"127.0.0.1:9469\"\n"),
    )
    .unwrap();
    assert_eq!(cfg.metrics_listen, Some("127.0.0.1:9469".parse().unwrap()));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert!(summary(&cfg).contains("metrics on http://127.0.0.1:9469/metrics"));
    let cfg = parse("gw.toml", &plus("\n[metrics]\nlisten = \"[::]:9469\"\n")).unwrap();
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("not a loopback address")),
        "{:?}",
        cfg.warnings
    );
    assert_eq!(
        err(&plus("\n[metrics]\nlisten = \"127.0.0.1\"\n")),
        "gw.toml:21: metrics.listen: \"127.0.0.1\" is not an address:port"
    );
    assert_eq!(
        err(&plus("\n[metrics]\nlisten = \"127.0.0.1:0\"\n")),
        "gw.toml:21: metrics.listen: \"127.0.0.1:0\": the port must not be 0"
    );
    assert!(
        err(&plus("\n[metrics]\nlisten = 9469\n"))
            .starts_with("gw.toml:21: metrics.listen: invalid type"),
        "{}",
        err(&plus("\n[metrics]\nlisten = 9469\n"))
    );
    assert!(
        err(&plus("\n[metrics]\nlsten = \"127.0.0.1:9469\"\n"))
            .starts_with("gw.toml:21: metrics.lsten: unknown key"),
        "{}",
        err(&plus("\n[metrics]\nlsten = \"127.0.0.1:9469\"\n"))
    );
}

/// Two gateway certificates from two CAs in `local.certs`: each a choice with its key and
/// the hash of the CA that issued it (found in `remote.cacerts`), picked by the peer's
/// CERTREQ; several need a `local.id` each names.
#[test]
fn several_local_certificates_are_choices_by_their_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let dir = pki_dir("choice");
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "Other CA");
    let ca2 = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "gw two");
    p.subject_alt_names = vec![SanType::DnsName("gw".try_into().unwrap())];
    let cert2 = p.signed_by(&key, &ca2, &ca_key).unwrap();
    std::fs::write(dir.join("ca2.pem"), ca2.pem()).unwrap();
    std::fs::write(dir.join("gw2.pem"), cert2.pem()).unwrap();
    std::fs::write(dir.join("gw2.key"), key.serialize_pem()).unwrap();
    let name = dir.join("gw.toml").to_str().unwrap().to_owned();
    let text = PUBKEY
        .replace(
            "certs = [\"gw.der\"]",
            "id = \"gw\"\ncerts = [\"gw.der\", \"gw2.pem\"]",
        )
        .replace(
            "cacerts = [\"ca.pem\"]",
            "cacerts = [\"ca.pem\", \"ca2.pem\"]",
        )
        + "\n[secrets.private-gw2]\nfile = \"gw2.key\"\n";
    let cfg = parse(&name, &plus(&text)).unwrap();
    let ike = &cfg.ike.connections[0].ike;
    let hash = |f: &str| {
        let pem = std::fs::read(dir.join(f)).unwrap();
        let der = crate::ike::auth::cert::certs_from_pem_or_der(&pem).unwrap();
        crate::ike::auth::cert::key_hash(&der[0]).unwrap()
    };
    let got: Vec<(&str, &[[u8; 20]], usize)> = ike
        .cert_choices
        .iter()
        .map(|c| (c.subject.as_str(), &c.ca_hashes[..], c.certs.len()))
        .collect();
    assert_eq!(
        got,
        [
            ("CN=gw", &[hash("ca.pem")][..], 1),
            ("CN=gw two", &[hash("ca2.pem")][..], 1)
        ]
    );
    assert_ne!(
        ike.cert_choices[0].key.public_key(),
        ike.cert_choices[1].key.public_key()
    );
    // The first is the default.
    let crate::ike::auth::LocalAuth::Pubkey { certs, .. } = &ike.local_auth else {
        panic!("pubkey")
    };
    assert_eq!(certs, &ike.cert_choices[0].certs);
    // One certificate: no choices.
    let one = parse(&name, &plus(PUBKEY)).unwrap();
    assert!(one.ike.connections[0].ike.cert_choices.is_empty());
    // Errors: no local.id; an id one of them does not name; a missing key.
    let e = err_in(&name, &text.replace("id = \"gw\"\n", ""));
    assert!(
        e.ends_with("connections.rw.local.id: local.certs with several end-entity certificates needs a local.id that each of them names"),
        "{e}"
    );
    let e = err_in(
        &name,
        &text.replace("id = \"gw\"\n", "id = \"gw.example.org\"\n"),
    );
    assert!(
        e.ends_with("connections.rw.local.certs: certificate 'CN=gw' does not name local.id \"gw.example.org\""),
        "{e}"
    );
    let e = err_in(
        &name,
        &text.replace("[secrets.private-gw2]\nfile = \"gw2.key\"\n", ""),
    );
    assert!(
        e.ends_with("connections.rw.local.certs: no [secrets.private-*] file holds the private key of certificate 'CN=gw two'"),
        "{e}"
    );
}

fn err_in(name: &str, text: &str) -> String {
    match parse(name, &plus(text)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `[secrets.private-NAME]` with `secret`: the passphrase of an encrypted PKCS#8 key
/// (`openssl pkcs8 -topk8 -v2 aes256`); a wrong one, a missing one and one for a key that is
/// not encrypted are errors that name the key.
#[test]
fn encrypted_private_key_with_its_passphrase() {
    let dir = pki_dir("enc");
    let out = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes256",
            "-passout",
            "pass:lab passphrase",
            "-in",
        ])
        .arg(dir.join("gw.key"))
        .output()
        .expect("openssl runs");
    assert!(out.status.success());
    assert!(out.stdout.starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY"));
    std::fs::write(dir.join("gw.enc"), &out.stdout).unwrap();
    let name = dir.join("gw.toml").to_str().unwrap().to_owned();
    let with = |file: &str, secret: Option<&str>| {
        let mut t = PUBKEY.replace("file = \"gw.key\"", &format!("file = \"{file}\""));
        if let Some(s) = secret {
            t = t.replace(
                &format!("file = \"{file}\"\n"),
                &format!("file = \"{file}\"\nsecret = \"{s}\"\n"),
            );
        }
        t
    };
    let cfg = parse(&name, &plus(&with("gw.enc", Some("lab passphrase")))).unwrap();
    let crate::ike::auth::LocalAuth::Pubkey { key, .. } = &cfg.ike.connections[0].ike.local_auth
    else {
        panic!("pubkey")
    };
    let plain =
        crate::ike::auth::PrivateKey::from_pem_or_der(&std::fs::read(dir.join("gw.key")).unwrap())
            .unwrap();
    assert_eq!(key.public_key(), plain.public_key());
    assert!(!format!("{cfg:?}").contains("lab passphrase"));
    let strip = |e: String| e.replace(&format!("{}/", dir.display()), "");
    let e = strip(err_in(&name, &with("gw.enc", Some("wrong"))));
    assert!(
        e.ends_with(
            "secrets.private-gw.secret: gw.enc: wrong passphrase (secret) for this encrypted key"
        ),
        "{e}"
    );
    let e = strip(err_in(&name, &with("gw.enc", None)));
    assert!(
        e.ends_with("secrets.private-gw.file[0]: gw.enc: an encrypted key: its passphrase goes in secret = \"...\""),
        "{e}"
    );
    let e = strip(err_in(&name, &with("gw.key", Some("lab passphrase"))));
    assert!(
        e.ends_with("secrets.private-gw.secret: gw.key: secret is the passphrase of an encrypted key, and this key is not encrypted"),
        "{e}"
    );
}

#[test]
fn ike_eap_tls_gateway() {
    use crate::ike::auth::{EapMethod, RemoteAuth};
    let dir = pki_dir("eaptls");
    let name = dir.join("gw.toml").to_str().unwrap().to_owned();
    let tls = PUBKEY.replace(
        "[connections.rw.remote]\nauth = \"pubkey\"\n",
        "[connections.rw.remote]\nauth = \"eap-tls\"\neap_id = \"%any\"\n",
    );
    let cfg = parse(&name, &plus(&tls)).unwrap();
    let ike = &cfg.ike.connections[0].ike;
    let RemoteAuth::Eap {
        method,
        ask_identity,
        tls: Some(creds),
        tls13_indication,
        ..
    } = &ike.remote_auth
    else {
        panic!("EAP-TLS expected: {:?}", ike.remote_auth)
    };
    assert_eq!(*method, EapMethod::Tls);
    assert!(*ask_identity && !*tls13_indication);
    assert_eq!(creds.certs.len(), 1);
    assert!(creds.trust.has_cas());
    let sum = summary(&cfg);
    assert!(
        sum.contains("remote auth eap-tls (client certificates of CAs 'CN=Lab CA', EAP-Identity asked, TLS 1.3 as strongSwan 5.9.8 (no success indication))"),
        "{sum}"
    );
    let with = tls.replace(
        "eap_id = \"%any\"\n",
        "eap_id = \"%any\"\ntls13_indication = true\n",
    );
    let cfg = parse(&name, &plus(&with)).unwrap();
    assert!(matches!(
        cfg.ike.connections[0].ike.remote_auth,
        RemoteAuth::Eap {
            tls13_indication: true,
            ..
        }
    ));
    // No CA; a PSK gateway; the indication without EAP-TLS.
    let e = err_in(&name, &tls.replace("cacerts = [\"ca.pem\"]\n", ""));
    assert!(
        e.ends_with("connections.rw.remote.cacerts: remote.auth = \"eap-tls\" needs remote.cacerts (or [authorities]): the CAs of the client certificates"),
        "{e}"
    );
    let psk_gw = tls.replace(
        "auth = \"pubkey\"\ncerts = [\"gw.der\"]\n",
        "auth = \"psk\"\nid = \"gw\"\n",
    ) + "\n[secrets.ike-gw]\nid = [\"gw\"]\nsecret = \"hunter2-lab-secret\"\n";
    let e = err_in(&name, &psk_gw);
    assert!(
        e.ends_with("connections.rw.local.auth: remote.auth = \"eap-tls\" needs local.auth = \"pubkey\" with local.certs: the gateway's certificate is its TLS certificate too"),
        "{e}"
    );
    let e = err_in(
        &name,
        &PUBKEY.replace(
            "cacerts = [\"ca.pem\"]\n",
            "cacerts = [\"ca.pem\"]\ntls13_indication = true\n",
        ),
    );
    assert!(
        e.contains("connections.rw.remote.tls13_indication: is for remote.auth = \"eap-tls\""),
        "{e}"
    );
}
