//! A child SA as its IKE SA tracks it.

use crate::ike::sa::ChildSa;
use crate::ike::sa::mif::MifChildState;

use crate::ike::config::Mode;
use crate::wire::TrafficSelector;

/// A child SA as the IKE SA tracks it (its keys went to the caller).
#[derive(Debug, Clone)]
pub(in crate::ike::sa) struct Child {
    pub(in crate::ike::sa) name: String,
    pub(in crate::ike::sa) spi_in: u32,
    pub(in crate::ike::sa) spi_out: u32,
    pub(in crate::ike::sa) local_ts: Vec<TrafficSelector>,
    pub(in crate::ike::sa) remote_ts: Vec<TrafficSelector>,
    pub(in crate::ike::sa) mode: Mode,
    /// Rekey when its byte or packet usage reaches these (soft limits, jitter applied);
    /// cleared once the rekey was asked for.
    pub(in crate::ike::sa) rekey_bytes: Option<u64>,
    pub(in crate::ike::sa) rekey_packets: Option<u64>,
    /// Delete when its byte or packet usage reaches these (hard limits).
    pub(in crate::ike::sa) life_bytes: Option<u64>,
    pub(in crate::ike::sa) life_packets: Option<u64>,
    /// Replaced by a rekey of ours; its Delete is due or under way.
    pub(in crate::ike::sa) rekeyed: bool,
    /// Replaced by a rekey of the peer's that we answered: the lowest nonce of that
    /// exchange and the new child's inbound SPI (for RFC 7296 section 2.8.1).
    pub(in crate::ike::sa) peer_rekey: Option<(Vec<u8>, u32)>,
    /// With the multi-interface extension: the child's two interface sets and policies.
    pub(in crate::ike::sa) mif: Option<MifChildState>,
    /// Replaced by a rekey of ours: the new child's inbound SPI (a MIF operation selecting
    /// this child selects it too, PROTOCOL 6.4).
    pub(in crate::ike::sa) successor: Option<u32>,
}

impl Child {
    pub(in crate::ike::sa) fn new(c: &ChildSa) -> Child {
        Child {
            name: c.name.clone(),
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            local_ts: c.local_ts.clone(),
            remote_ts: c.remote_ts.clone(),
            mode: c.mode,
            rekey_bytes: None,
            rekey_packets: None,
            life_bytes: None,
            life_packets: None,
            rekeyed: false,
            peer_rekey: None,
            mif: None,
            successor: None,
        }
    }
}
