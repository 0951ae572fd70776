//! The initial exchanges, IKE_SA_INIT and IKE_AUTH, as typed states: the initiator's in
//! `initiator.rs`, the responder's in `responder.rs`; what both send here.

mod initiator;
mod responder;

pub(in crate::ike::sa) use initiator::*;
pub use initiator::{MAX_CP_ATTRIBUTES, MAX_DNS, MAX_VIPS_PER_FAMILY};
pub(in crate::ike::sa) use responder::*;

use crate::ike::sa::core::{nat_detection_hash, nat_notifies};
use crate::ike::sa::ctx::Ctx;
use crate::ike::sa::{SIGNATURE_HASHES, notify};
use std::net::SocketAddr;

use crate::ike::config::IkeConfig;
use crate::wire::{NotifyPayload, NotifyType, Payload};

/// Our NAT_DETECTION notifies; with `force_encap` the source hash is random, so that it
/// cannot match and the peer believes we are behind a NAT (RFC 7296 section 2.23).
pub(in crate::ike::sa) fn our_nat_notifies(
    ctx: &Ctx,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> [Payload; 2] {
    let mut n = nat_notifies(spi_i, spi_r, local, remote);
    if ctx.cfg.force_encap {
        let fake = ctx
            .random::<20>()
            .unwrap_or_else(|_| nat_detection_hash(spi_i, !spi_r, local));
        n[0] = Payload::Notify(NotifyPayload::new(
            NotifyType::NatDetectionSourceIp,
            fake.to_vec(),
        ));
    }
    n
}

/// NAT detection on a received IKE_SA_INIT message whose header carries `spi_i`, `spi_r`,
/// The extension notifies of our IKE_SA_INIT request or response:
/// IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383) when enabled, SIGNATURE_HASH_ALGORITHMS
/// (RFC 7427).
pub(in crate::ike::sa) fn init_extension_notifies(cfg: &IkeConfig) -> Vec<Payload> {
    let mut out = Vec::new();
    if cfg.fragmentation {
        out.push(notify(NotifyType::Ikev2FragmentationSupported));
    }
    let hashes = SIGNATURE_HASHES
        .iter()
        .flat_map(|h| h.to_be_bytes())
        .collect();
    out.push(Payload::Notify(NotifyPayload::new(
        NotifyType::SignatureHashAlgorithms,
        hashes,
    )));
    out
}
