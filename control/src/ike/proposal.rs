//! SA payloads built from our proposals, the responder's choice among the initiator's
//! proposals (RFC 7296 sections 2.7 and 3.3.6), the initiator's check of that choice, and
//! traffic-selector narrowing (section 2.9).
//!
//! A proposal is acceptable when every transform type it carries is one we know, it has
//! at least one transform we accept of each type we need, and any integrity transform is
//! `NONE` (we only do AEAD ciphers). Transforms with unknown IDs or attributes are
//! skipped. The responder walks the initiator's proposals in order and, within one, takes
//! the initiator's first transform of each type that one of our proposals also lists.

use mifsec_dataplane::aead::Cipher;

use super::config::{EspProposal, IkeProposal};
use super::crypto::{Prf, cipher_from_transform, encr_transform, group_supported};
use crate::wire::{
    AttributeType, AttributeValue, DhGroup, EsnId, IntegId, Proposal, ProtocolId, SaPayload,
    TrafficSelector, Transform, TransformId,
};

/// The transforms negotiated for an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeChoice {
    /// The AEAD.
    pub cipher: Cipher,
    /// The PRF.
    pub prf: Prf,
    /// The Diffie-Hellman group.
    pub group: DhGroup,
}

/// The transforms negotiated for an ESP child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspChoice {
    /// The AEAD.
    pub cipher: Cipher,
    /// Extended sequence numbers.
    pub esn: bool,
}

/// The acceptable transforms of one received proposal, in the sender's order.
#[derive(Debug, Default)]
struct Offer {
    ciphers: Vec<Cipher>,
    prfs: Vec<Prf>,
    groups: Vec<DhGroup>,
    esn: Vec<bool>,
    has_integ: bool,
    integ_none: bool,
    unknown_type: bool,
}

impl Offer {
    fn parse(p: &Proposal) -> Offer {
        let mut o = Offer::default();
        for t in &p.transforms {
            // A transform with an attribute other than a TV Key Length is not ours.
            let plain_attrs = t.attributes.iter().all(|a| {
                a.attr_type == AttributeType::KeyLength
                    && matches!(a.value, AttributeValue::Short(_))
            });
            match t.id {
                TransformId::Encr(id) if plain_attrs => {
                    if let Some(c) = cipher_from_transform(id, t.key_length()) {
                        o.ciphers.push(c);
                    }
                }
                TransformId::Prf(id) if t.attributes.is_empty() => {
                    o.prfs.extend(Prf::from_id(id));
                }
                TransformId::Integ(id) => {
                    o.has_integ = true;
                    o.integ_none |= id == IntegId::None;
                }
                TransformId::Dh(g) if t.attributes.is_empty() && group_supported(g) => {
                    o.groups.push(g);
                }
                TransformId::Esn(EsnId::Esn) => o.esn.push(true),
                TransformId::Esn(EsnId::NoEsn) => o.esn.push(false),
                TransformId::Unknown { .. } => o.unknown_type = true,
                _ => {}
            }
        }
        o
    }

    fn integ_ok(&self) -> bool {
        !self.has_integ || self.integ_none
    }
}

fn first_common<T: Copy + PartialEq>(offered: &[T], ours: &[T]) -> Option<T> {
    offered.iter().copied().find(|x| ours.contains(x))
}

fn encr(cipher: Cipher) -> Transform {
    match encr_transform(cipher) {
        (id, Some(bits)) => Transform::with_key_length(TransformId::Encr(id), bits),
        (id, None) => Transform::new(TransformId::Encr(id)),
    }
}

fn esn(on: bool) -> Transform {
    Transform::new(TransformId::Esn(if on { EsnId::Esn } else { EsnId::NoEsn }))
}

/// The SA payload of an IKE_SA_INIT request: our proposals numbered from 1, empty SPIs.
pub fn ike_sa_payload(proposals: &[IkeProposal]) -> SaPayload {
    SaPayload {
        proposals: proposals
            .iter()
            .zip(1u8..)
            .map(|(p, number)| Proposal {
                number,
                protocol: ProtocolId::Ike,
                spi: Vec::new(),
                transforms: p
                    .ciphers
                    .iter()
                    .map(|&c| encr(c))
                    .chain(
                        p.prfs
                            .iter()
                            .map(|p| Transform::new(TransformId::Prf(p.id()))),
                    )
                    .chain(p.groups.iter().map(|&g| Transform::new(TransformId::Dh(g))))
                    .collect(),
            })
            .collect(),
    }
}

/// The responder's choice among the proposals of an IKE_SA_INIT request: the proposal
/// number and the transforms. The group is the KE payload's group when the chosen
/// proposal allows it, so that INVALID_KE_PAYLOAD is needed only when it does not.
pub fn select_ike(
    offered: &SaPayload,
    ours: &[IkeProposal],
    ke_group: DhGroup,
) -> Option<(u8, IkeChoice)> {
    for p in &offered.proposals {
        if p.protocol != ProtocolId::Ike || !p.spi.is_empty() {
            continue;
        }
        let o = Offer::parse(p);
        if o.unknown_type || !o.integ_ok() {
            continue;
        }
        for mine in ours {
            let cipher = first_common(&o.ciphers, &mine.ciphers);
            let prf = first_common(&o.prfs, &mine.prfs);
            let group = if o.groups.contains(&ke_group) && mine.groups.contains(&ke_group) {
                Some(ke_group)
            } else {
                first_common(&o.groups, &mine.groups)
            };
            if let (Some(cipher), Some(prf), Some(group)) = (cipher, prf, group) {
                return Some((p.number, IkeChoice { cipher, prf, group }));
            }
        }
    }
    None
}

/// The SA payload of an IKE_SA_INIT response: the chosen proposal only.
pub fn ike_response_payload(number: u8, choice: IkeChoice) -> SaPayload {
    SaPayload {
        proposals: vec![Proposal {
            number,
            protocol: ProtocolId::Ike,
            spi: Vec::new(),
            transforms: vec![
                encr(choice.cipher),
                Transform::new(TransformId::Prf(choice.prf.id())),
                Transform::new(TransformId::Dh(choice.group)),
            ],
        }],
    }
}

/// The initiator's check of an IKE_SA_INIT response's SA payload: one proposal, one
/// transform of each type, all within the proposal of that number we sent.
pub fn check_ike_response(resp: &SaPayload, ours: &[IkeProposal]) -> Option<IkeChoice> {
    let [p] = resp.proposals.as_slice() else {
        return None;
    };
    let mine = ours.get(usize::from(p.number).checked_sub(1)?)?;
    if p.protocol != ProtocolId::Ike || !p.spi.is_empty() {
        return None;
    }
    let o = Offer::parse(p);
    let single = o.ciphers.len() == 1 && o.prfs.len() == 1 && o.groups.len() == 1;
    if !single || o.unknown_type || !o.integ_ok() || p.transforms.len() != 3 {
        return None;
    }
    let choice = IkeChoice {
        cipher: o.ciphers[0],
        prf: o.prfs[0],
        group: o.groups[0],
    };
    (mine.ciphers.contains(&choice.cipher)
        && mine.prfs.contains(&choice.prf)
        && mine.groups.contains(&choice.group))
    .then_some(choice)
}

/// The SA payload of an IKE_AUTH request for the first child: our ESP proposals with our
/// inbound SPI, numbered from 1, each with its ESN options (no DH: no PFS in IKE_AUTH).
pub fn esp_sa_payload(proposals: &[EspProposal], spi: u32) -> SaPayload {
    SaPayload {
        proposals: proposals
            .iter()
            .zip(1u8..)
            .map(|(p, number)| Proposal {
                number,
                protocol: ProtocolId::Esp,
                spi: spi.to_be_bytes().to_vec(),
                transforms: p
                    .ciphers
                    .iter()
                    .map(|&c| encr(c))
                    .chain(p.esn.options().iter().map(|&e| esn(e)))
                    .collect(),
            })
            .collect(),
    }
}

fn esp_spi(p: &Proposal) -> Option<u32> {
    let spi: [u8; 4] = p.spi.as_slice().try_into().ok()?;
    Some(u32::from_be_bytes(spi)).filter(|&s| s >= 256)
}

/// The responder's choice among ESP proposals: the proposal number, the peer's SPI and
/// the transforms. DH transforms are ignored (IKE_AUTH has no KE payload).
pub fn select_esp(offered: &SaPayload, ours: &[EspProposal]) -> Option<(u8, u32, EspChoice)> {
    for p in &offered.proposals {
        if p.protocol != ProtocolId::Esp {
            continue;
        }
        let Some(spi) = esp_spi(p) else { continue };
        let o = Offer::parse(p);
        if o.unknown_type || !o.integ_ok() {
            continue;
        }
        for mine in ours {
            let cipher = first_common(&o.ciphers, &mine.ciphers);
            let esn = first_common(&o.esn, mine.esn.options());
            if let (Some(cipher), Some(esn)) = (cipher, esn) {
                return Some((p.number, spi, EspChoice { cipher, esn }));
            }
        }
    }
    None
}

/// The SA payload of an IKE_AUTH response: the chosen ESP proposal with our SPI.
pub fn esp_response_payload(number: u8, spi: u32, choice: EspChoice) -> SaPayload {
    SaPayload {
        proposals: vec![Proposal {
            number,
            protocol: ProtocolId::Esp,
            spi: spi.to_be_bytes().to_vec(),
            transforms: vec![encr(choice.cipher), esn(choice.esn)],
        }],
    }
}

/// The initiator's check of the ESP SA in an IKE_AUTH response: the peer's SPI and the
/// transforms, which must lie within the proposal of that number we sent.
pub fn check_esp_response(resp: &SaPayload, ours: &[EspProposal]) -> Option<(u32, EspChoice)> {
    let [p] = resp.proposals.as_slice() else {
        return None;
    };
    let mine = ours.get(usize::from(p.number).checked_sub(1)?)?;
    if p.protocol != ProtocolId::Esp {
        return None;
    }
    let spi = esp_spi(p)?;
    let o = Offer::parse(p);
    if o.ciphers.len() != 1 || o.esn.len() != 1 || o.unknown_type || !o.integ_ok() {
        return None;
    }
    let choice = EspChoice {
        cipher: o.ciphers[0],
        esn: o.esn[0],
    };
    (mine.ciphers.contains(&choice.cipher) && mine.esn.options().contains(&choice.esn))
        .then_some((spi, choice))
}

fn intersect_range<T: Ord + Copy>(a: (T, T), b: (T, T)) -> Option<(T, T)> {
    let start = a.0.max(b.0);
    let end = a.1.min(b.1);
    (start <= end).then_some((start, end))
}

fn intersect_proto(a: u8, b: u8) -> Option<u8> {
    match (a, b) {
        (0, x) | (x, 0) => Some(x),
        (x, y) if x == y => Some(x),
        _ => None,
    }
}

/// The intersection of two traffic selectors, if not empty (same family, compatible
/// protocols, overlapping ports and addresses).
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    match (a, b) {
        (
            TrafficSelector::Ipv4 {
                ip_protocol: pa,
                start_port: spa,
                end_port: epa,
                start: sa,
                end: ea,
            },
            TrafficSelector::Ipv4 {
                ip_protocol: pb,
                start_port: spb,
                end_port: epb,
                start: sb,
                end: eb,
            },
        ) => {
            let ip_protocol = intersect_proto(*pa, *pb)?;
            let (start_port, end_port) = intersect_range((*spa, *epa), (*spb, *epb))?;
            let (start, end) = intersect_range((*sa, *ea), (*sb, *eb))?;
            Some(TrafficSelector::Ipv4 {
                ip_protocol,
                start_port,
                end_port,
                start,
                end,
            })
        }
        (
            TrafficSelector::Ipv6 {
                ip_protocol: pa,
                start_port: spa,
                end_port: epa,
                start: sa,
                end: ea,
            },
            TrafficSelector::Ipv6 {
                ip_protocol: pb,
                start_port: spb,
                end_port: epb,
                start: sb,
                end: eb,
            },
        ) => {
            let ip_protocol = intersect_proto(*pa, *pb)?;
            let (start_port, end_port) = intersect_range((*spa, *epa), (*spb, *epb))?;
            let (start, end) = intersect_range((*sa, *ea), (*sb, *eb))?;
            Some(TrafficSelector::Ipv6 {
                ip_protocol,
                start_port,
                end_port,
                start,
                end,
            })
        }
        _ => None,
    }
}

/// Narrows `offered` to `allowed`: every non-empty pairwise intersection, without
/// duplicates, in the offered order. Empty means TS_UNACCEPTABLE.
pub fn narrow(offered: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for o in offered {
        for a in allowed {
            if let Some(ts) = intersect(o, a) {
                if !out.contains(&ts) {
                    out.push(ts);
                }
            }
        }
    }
    out
}

/// Whether `ts` lies within one of `of`.
pub fn is_subset(ts: &TrafficSelector, of: &[TrafficSelector]) -> bool {
    of.iter().any(|o| intersect(ts, o).as_ref() == Some(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::config::{EsnPolicy, ts_prefix, ts_range};

    #[test]
    fn ike_selection_prefers_ke_group_and_initiator_order() {
        let init = vec![IkeProposal::all()];
        let sa = ike_sa_payload(&init);
        let resp = vec![IkeProposal {
            ciphers: vec![Cipher::ChaCha20Poly1305, Cipher::Aes128Gcm],
            prfs: vec![Prf::HmacSha512, Prf::HmacSha256],
            groups: vec![DhGroup::Ecp384, DhGroup::Curve25519],
        }];
        let (n, c) = select_ike(&sa, &resp, DhGroup::Curve25519).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            c,
            IkeChoice {
                cipher: Cipher::Aes128Gcm,
                prf: Prf::HmacSha256,
                group: DhGroup::Curve25519
            }
        );
        // KE group not acceptable: the first common group in the initiator's order, for
        // INVALID_KE_PAYLOAD.
        let (_, c) = select_ike(&sa, &resp, DhGroup::Ecp256).unwrap();
        assert_eq!(c.group, DhGroup::Curve25519);
        let back = ike_response_payload(n, c);
        assert_eq!(check_ike_response(&back, &init), Some(c));
        // A response outside what we sent is refused.
        assert_eq!(check_ike_response(&back, &resp[..0]), None);
        let none = vec![IkeProposal {
            groups: vec![DhGroup::Ecp256],
            ..resp[0].clone()
        }];
        let narrow_init = vec![IkeProposal {
            groups: vec![DhGroup::Curve25519],
            ..IkeProposal::all()
        }];
        assert!(select_ike(&ike_sa_payload(&narrow_init), &none, DhGroup::Curve25519).is_none());
    }

    #[test]
    fn integrity_and_unknown_types_refuse_a_proposal() {
        let mut sa = ike_sa_payload(&[IkeProposal::all()]);
        sa.proposals[0]
            .transforms
            .push(Transform::new(TransformId::Integ(
                IntegId::HmacSha2_256_128,
            )));
        assert!(select_ike(&sa, &[IkeProposal::all()], DhGroup::Curve25519).is_none());
        sa.proposals[0]
            .transforms
            .push(Transform::new(TransformId::Integ(IntegId::None)));
        assert!(select_ike(&sa, &[IkeProposal::all()], DhGroup::Curve25519).is_some());
        sa.proposals[0]
            .transforms
            .push(Transform::new(TransformId::Unknown {
                transform_type: 99,
                id: 1,
            }));
        assert!(select_ike(&sa, &[IkeProposal::all()], DhGroup::Curve25519).is_none());
    }

    #[test]
    fn esp_selection_and_esn() {
        let init = vec![EspProposal {
            ciphers: vec![Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305],
            esn: EsnPolicy::Either,
        }];
        let sa = esp_sa_payload(&init, 0x1234_5678);
        let resp = vec![EspProposal {
            ciphers: vec![Cipher::ChaCha20Poly1305],
            esn: EsnPolicy::No,
        }];
        let (n, spi, c) = select_esp(&sa, &resp).unwrap();
        assert_eq!((n, spi), (1, 0x1234_5678));
        assert_eq!(
            c,
            EspChoice {
                cipher: Cipher::ChaCha20Poly1305,
                esn: false
            }
        );
        let back = esp_response_payload(n, 0xabcd_ef01, c);
        assert_eq!(check_esp_response(&back, &init), Some((0xabcd_ef01, c)));
        let yes = vec![EspProposal {
            ciphers: Cipher::ALL.to_vec(),
            esn: EsnPolicy::Yes,
        }];
        assert!(select_esp(&esp_sa_payload(&resp, 300), &yes).is_none());
        // SPIs below 256 are reserved.
        assert!(select_esp(&esp_sa_payload(&init, 5), &resp).is_none());
    }

    #[test]
    fn narrowing() {
        let any = TrafficSelector::ipv4_any();
        let net = ts_prefix("10.0.0.0".parse().unwrap(), 16);
        let host = ts_prefix("10.0.3.7".parse().unwrap(), 32);
        assert_eq!(
            narrow(std::slice::from_ref(&any), std::slice::from_ref(&net)),
            vec![net.clone()]
        );
        assert_eq!(
            narrow(std::slice::from_ref(&host), std::slice::from_ref(&net)),
            vec![host.clone()]
        );
        let other = ts_prefix("192.168.0.0".parse().unwrap(), 24);
        assert!(narrow(std::slice::from_ref(&other), std::slice::from_ref(&net)).is_empty());
        assert!(narrow(&[TrafficSelector::ipv6_any()], std::slice::from_ref(&net)).is_empty());
        assert!(is_subset(&host, &[other.clone(), net.clone()]));
        assert!(!is_subset(&net, std::slice::from_ref(&host)));
        let tcp80 = TrafficSelector::Ipv4 {
            ip_protocol: 6,
            start_port: 80,
            end_port: 80,
            start: "10.0.0.1".parse().unwrap(),
            end: "10.0.0.1".parse().unwrap(),
        };
        assert_eq!(intersect(&tcp80, &net), Some(tcp80.clone()));
        let udp = TrafficSelector::Ipv4 {
            ip_protocol: 17,
            start_port: 0,
            end_port: u16::MAX,
            start: "10.0.0.0".parse().unwrap(),
            end: "10.0.0.9".parse().unwrap(),
        };
        assert!(ts_range("10.0.0.0".parse().unwrap(), "10.0.0.9".parse().unwrap()).is_some());
        assert_eq!(intersect(&tcp80, &udp), None);
    }
}
