//! MOBIKE as initiator (RFC 4555 sections 3.5 to 3.8): what an IKE SA keeps to choose its
//! path. The exchanges are `exchange/mobike_probe.rs` (liveness checks with NAT detection
//! and COOKIE2, on the current path or fanned out over the candidates) and
//! `exchange/mobike_initiator.rs` (UPDATE_SA_ADDRESSES, our address list); the established
//! state (`established.rs`) runs them:
//!
//! * our usable local addresses, preferred first ([`IkeSa::set_local_addresses`]); unknown
//!   until the caller tells, then the current path's address is the only one;
//! * outbound traffic without inbound ([`IkeSa::note_traffic`]): after `path_check_delay`
//!   a liveness check goes on the current path, `path_check_tries` times
//!   `path_check_interval` apart; a request of ours unanswered that long counts the same;
//! * the path found dead (or its address gone): the outstanding request (or a new check)
//!   is sent on every candidate pair at once, with the same message ID, each copy with
//!   its own NAT_DETECTION_* hashes; the first pair that answers becomes the path
//!   (`pending_update`), then UPDATE_SA_ADDRESSES moves the peer and, once answered and
//!   verified, the children ([`Event::IkeSaMoved`]);
//! * pairs the peer refused (UNACCEPTABLE_ADDRESSES, UNEXPECTED_NAT_DETECTED) are not
//!   tried again.
//!
//! [`IkeSa::set_local_addresses`]: super::IkeSa::set_local_addresses
//! [`IkeSa::note_traffic`]: super::IkeSa::note_traffic
//! [`Event::IkeSaMoved`]: super::Event::IkeSaMoved

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::paths::PathSet;
use super::{MoveReason, NatStatus};

/// The most candidate pairs one probe is sent on.
pub(in crate::ike::sa) const MAX_CANDIDATES: usize = 16;
/// The most refused pairs remembered (oldest forgotten first).
const MAX_REFUSED: usize = 16;

/// A (local, remote) pair of socket addresses.
pub(in crate::ike::sa) type Pair = (SocketAddr, SocketAddr);

/// An IKE SA's roaming state; see the module documentation.
#[derive(Debug, Default)]
pub(in crate::ike::sa) struct Roam {
    /// Our usable local addresses, preferred first; `None`: never told.
    pub(in crate::ike::sa) local: Option<Vec<IpAddr>>,
    /// The additional addresses we last told the peer (`None`: none told yet).
    pub(in crate::ike::sa) announced: Option<Vec<IpAddr>>,
    /// Outbound traffic reported with nothing inbound since this time.
    pub(in crate::ike::sa) unanswered_since: Option<Instant>,
    /// Why we look for another path, while a probe is under way.
    pub(in crate::ike::sa) probing: Option<MoveReason>,
    /// Pairs the peer refused.
    pub(in crate::ike::sa) refused: Vec<Pair>,
    /// What the peer last reported of our address on the current path (its
    /// NAT_DETECTION_DESTINATION_IP): a change is a new NAT mapping (RFC 4555 section 3.8).
    pub(in crate::ike::sa) peer_saw: Option<Vec<u8>>,
}

impl Roam {
    /// Whether `ip` is one of our usable addresses (any, while we were never told).
    pub(in crate::ike::sa) fn usable(&self, ip: IpAddr) -> bool {
        self.local.as_ref().is_none_or(|l| l.contains(&ip))
    }

    /// Our addresses in order of preference (the current path's alone, never told).
    pub(in crate::ike::sa) fn locals(&self, paths: &PathSet) -> Vec<IpAddr> {
        match &self.local {
            Some(l) => l.clone(),
            None => vec![paths.local().ip()],
        }
    }

    /// The additional addresses to announce: ours but the current path's.
    pub(in crate::ike::sa) fn additional(&self, paths: &PathSet) -> Option<Vec<IpAddr>> {
        let current = paths.local().ip();
        self.local
            .as_ref()
            .map(|l| l.iter().copied().filter(|a| *a != current).collect())
    }

    /// The pairs a probe tries, in preference order: each usable local address (preferred
    /// first) with the peer's current address, then its additional addresses, same
    /// family only, the ports of the current path; the current path among them if its
    /// address is usable; refused pairs left out; at most [`MAX_CANDIDATES`].
    pub(in crate::ike::sa) fn candidates(&self, paths: &PathSet) -> Vec<Pair> {
        let (l0, r0) = paths.pair();
        let mut remotes = vec![r0.ip()];
        remotes.extend(paths.peer_addresses().iter().filter(|a| **a != r0.ip()));
        let mut out = Vec::new();
        for l in self.locals(paths) {
            for r in &remotes {
                if l.is_ipv4() != r.is_ipv4() || l.is_unspecified() {
                    continue;
                }
                let pair = (
                    SocketAddr::new(l, l0.port()),
                    SocketAddr::new(*r, r0.port()),
                );
                if !self.refused.contains(&pair) && !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
        out.truncate(MAX_CANDIDATES);
        out
    }

    /// The best pair if it is better than the current path: a more preferred local address
    /// (with `prefer_best_path`).
    pub(in crate::ike::sa) fn better(&self, paths: &PathSet) -> Option<Pair> {
        let locals = self.local.as_ref()?;
        let rank = |ip: IpAddr| locals.iter().position(|a| *a == ip).unwrap_or(usize::MAX);
        let current = rank(paths.local().ip());
        self.candidates(paths)
            .into_iter()
            .next()
            .filter(|p| rank(p.0.ip()) < current)
    }

    /// The peer refused `pair`.
    pub(in crate::ike::sa) fn refuse(&mut self, pair: Pair) {
        if !self.refused.contains(&pair) {
            if self.refused.len() >= MAX_REFUSED {
                self.refused.remove(0);
            }
            self.refused.push(pair);
        }
    }
}

/// NAT detection from the NAT_DETECTION_* notifies of the peer's answer on `pair` (its
/// source hash over its address, its destination hash over ours as it saw it); none: no
/// NAT. `force_encap`: we claim to be behind one.
pub(in crate::ike::sa) fn nat_of_answer(
    spis: (u64, u64),
    p: &[crate::wire::Payload],
    (local, remote): Pair,
    force_encap: bool,
) -> (NatStatus, Option<Vec<u8>>) {
    use super::nat_detection_hash;
    use crate::wire::{NotifyType, Payload};
    let of = |t: NotifyType| {
        p.iter().filter_map(move |q| match q {
            Payload::Notify(n) if n.notify_type == t => Some(n.data.clone()),
            _ => None,
        })
    };
    let src = nat_detection_hash(spis.0, spis.1, remote).to_vec();
    let dst = nat_detection_hash(spis.0, spis.1, local).to_vec();
    let srcs: Vec<_> = of(NotifyType::NatDetectionSourceIp).collect();
    let seen = of(NotifyType::NatDetectionDestinationIp).next();
    let nat = NatStatus {
        remote_behind_nat: !srcs.is_empty() && !srcs.contains(&src),
        local_behind_nat: force_encap || seen.as_ref().is_some_and(|d| *d != dst),
    };
    (nat, seen)
}
