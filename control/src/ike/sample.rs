//! Sample configurations: a road-warrior client and a gateway with a pool, both with a PSK.
//! The two-peer harness, the fuzz targets and the handshake benchmark all start from these,
//! so that they exercise the same exchange.

use std::net::Ipv4Addr;

use zeroize::Zeroizing;

use super::auth::{LocalAuth, RemoteAuth};
use super::config::{
    AddressPool, ChildConfig, DpdConfig, EspProposal, IkeConfig, IkeProposal, Lifetimes, Mode,
    RetransmitConfig, RoamConfig,
};
use crate::wire::{IdPayload, TrafficSelector};

/// The PSK both samples share.
pub const PSK: &[u8] = b"correct horse battery staple";

fn child(local: Vec<TrafficSelector>, remote: Vec<TrafficSelector>) -> ChildConfig {
    ChildConfig {
        name: "net".into(),
        proposals: vec![EspProposal::all()],
        local_ts: local,
        remote_ts: remote,
        mode: Mode::Tunnel,
        lifetimes: None,
        mif_accept: true,
        policy: mifsec_dataplane::sa_table::Policy::Failover,
        interfaces: Vec::new(),
    }
}

/// A road-warrior client (`alice@example.org`) asking for a virtual IP, everything into the
/// tunnel, offering every supported IKE proposal (X25519 first).
pub fn client() -> IkeConfig {
    IkeConfig {
        local_id: IdPayload::rfc822("alice@example.org"),
        remote_id: Some(IdPayload::fqdn("gw.example.org")),
        local_auth: LocalAuth::Psk(Zeroizing::new(PSK.to_vec())),
        remote_auth: RemoteAuth::Psk(Zeroizing::new(PSK.to_vec())),
        cert_choices: Vec::new(),
        proposals: vec![IkeProposal::all()],
        child: child(
            vec![TrafficSelector::ipv4_any()],
            vec![TrafficSelector::ipv4_any()],
        ),
        more_children: Vec::new(),
        request_vip: true,
        request_vip6: false,
        pools: Vec::new(),
        mobike: true,
        mobike_peers: Vec::new(),
        clone_ike_sa: true,
        clone_children: Vec::new(),
        nat_t_port: Some(4500),
        force_encap: false,
        fragmentation: true,
        fragment_size: super::fragment::DEFAULT_FRAGMENT_SIZE,
        retransmit: RetransmitConfig::default(),
        lifetimes: Lifetimes::default(),
        dpd: DpdConfig::default(),
        roam: RoamConfig::default(),
        mif_on_new: Default::default(),
        mif_prefer: false,
        mif: true,
        mif_max_interfaces: 16,
        mif_max_paths: 16,
    }
}

/// A gateway (`gw.example.org`) protecting 10.1.0.0/16, with a pool of virtual IPs from
/// 10.99.0.1.
pub fn gateway() -> IkeConfig {
    IkeConfig {
        local_id: IdPayload::fqdn("gw.example.org"),
        remote_id: None,
        local_auth: LocalAuth::Psk(Zeroizing::new(PSK.to_vec())),
        remote_auth: RemoteAuth::Psk(Zeroizing::new(PSK.to_vec())),
        cert_choices: Vec::new(),
        proposals: vec![IkeProposal::all()],
        child: child(
            vec![super::config::ts_prefix(
                Ipv4Addr::new(10, 1, 0, 0).into(),
                16,
            )],
            vec![TrafficSelector::ipv4_any()],
        ),
        more_children: Vec::new(),
        request_vip: false,
        request_vip6: false,
        pools: vec![AddressPool::new(Ipv4Addr::new(10, 99, 0, 1), 16)],
        mobike: true,
        mobike_peers: Vec::new(),
        clone_ike_sa: true,
        clone_children: Vec::new(),
        nat_t_port: Some(4500),
        force_encap: false,
        fragmentation: true,
        fragment_size: super::fragment::DEFAULT_FRAGMENT_SIZE,
        retransmit: RetransmitConfig::default(),
        lifetimes: Lifetimes::default(),
        dpd: DpdConfig::default(),
        roam: RoamConfig::default(),
        mif_on_new: Default::default(),
        mif_prefer: false,
        mif: true,
        mif_max_interfaces: 16,
        mif_max_paths: 16,
    }
}

/// The EAP user of the EAP samples and its password.
pub const EAP_USER: &str = "carol";
/// Carol's password.
pub const EAP_PASSWORD: &[u8] = b"carol's password";

/// [`client`] authenticating with EAP-MSCHAPv2 as [`EAP_USER`] (its `eap_id`), the gateway
/// still with the PSK.
pub fn eap_client() -> IkeConfig {
    let mut c = client();
    c.local_auth = LocalAuth::Eap {
        method: super::auth::EapMethod::Mschapv2,
        identity: Some(EAP_USER.as_bytes().to_vec()),
        secret: Zeroizing::new(EAP_PASSWORD.to_vec()),
        tls: None,
    };
    c
}

/// [`gateway`] authenticating its clients with EAP-MSCHAPv2 (users: [`EAP_USER`]), asking
/// for their EAP identity (`remote.eap_id = %any`).
pub fn eap_gateway() -> IkeConfig {
    let mut g = gateway();
    let mut users = super::auth::EapUsers::default();
    users.add(
        vec![EAP_USER.as_bytes().to_vec()],
        Zeroizing::new(EAP_PASSWORD.to_vec()),
    );
    g.remote_auth = RemoteAuth::Eap {
        method: super::auth::EapMethod::Mschapv2,
        users: std::sync::Arc::new(users),
        ask_identity: true,
        tls: None,
        tls13_indication: false,
    };
    g
}
