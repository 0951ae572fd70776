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
    esp_sa_payload_pfs(proposals, spi, false)
}

/// The SA payload of a CREATE_CHILD_SA request: like [`esp_sa_payload`], with each
/// proposal's DH groups when `pfs` (a proposal without groups then offers no PFS).
pub fn esp_sa_payload_pfs(proposals: &[EspProposal], spi: u32, pfs: bool) -> SaPayload {
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
                    .chain(
                        p.groups
                            .iter()
                            .filter(|_| pfs)
                            .map(|&g| Transform::new(TransformId::Dh(g))),
                    )
                    .chain(p.esn.options().iter().map(|&e| esn(e)))
                    .collect(),
            })
            .collect(),
    }
}

/// Why no ESP proposal of a CREATE_CHILD_SA request was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspRefusal {
    /// Nothing acceptable: NO_PROPOSAL_CHOSEN.
    NoProposal,
    /// Acceptable, but with another DH group than the KE payload's: INVALID_KE_PAYLOAD.
    InvalidKe(DhGroup),
}

/// The responder's choice among the ESP proposals of a CREATE_CHILD_SA request whose KE
/// payload (if any) is in `ke_group`: the proposal number, the peer's SPI, the transforms
/// and the PFS group. One of our proposals with groups needs a common group (and a KE
/// payload in it); one without groups takes only offers without DH.
pub fn select_esp_pfs(
    offered: &SaPayload,
    ours: &[EspProposal],
    ke_group: Option<DhGroup>,
) -> Result<(u8, u32, EspChoice, Option<DhGroup>), EspRefusal> {
    let mut refusal = EspRefusal::NoProposal;
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
            let (Some(cipher), Some(esn)) = (cipher, esn) else {
                continue;
            };
            let choice = EspChoice { cipher, esn };
            if mine.groups.is_empty() {
                if o.groups.is_empty() && ke_group.is_none() {
                    return Ok((p.number, spi, choice, None));
                }
                continue;
            }
            let group = match ke_group {
                Some(g) if o.groups.contains(&g) && mine.groups.contains(&g) => Some(g),
                _ => first_common(&o.groups, &mine.groups),
            };
            match group {
                Some(g) if Some(g) == ke_group => return Ok((p.number, spi, choice, Some(g))),
                Some(g) if refusal == EspRefusal::NoProposal => {
                    refusal = EspRefusal::InvalidKe(g);
                }
                _ => {}
            }
        }
    }
    Err(refusal)
}

/// The SA payload answering a CREATE_CHILD_SA request: the chosen proposal with our SPI
/// and the PFS group, if any.
pub fn esp_response_payload_pfs(
    number: u8,
    spi: u32,
    choice: EspChoice,
    group: Option<DhGroup>,
) -> SaPayload {
    let mut sa = esp_response_payload(number, spi, choice);
    if let (Some(g), Some(p)) = (group, sa.proposals.first_mut()) {
        p.transforms.insert(1, Transform::new(TransformId::Dh(g)));
    }
    sa
}

/// The initiator's check of the ESP SA in a CREATE_CHILD_SA response: the peer's SPI,
/// the transforms and the PFS group, all within the proposal of that number we sent.
pub fn check_esp_response_pfs(
    resp: &SaPayload,
    ours: &[EspProposal],
) -> Option<(u32, EspChoice, Option<DhGroup>)> {
    let (spi, choice) = check_esp_response(resp, ours)?;
    let mine = ours.get(usize::from(resp.proposals.first()?.number).checked_sub(1)?)?;
    let o = Offer::parse(resp.proposals.first()?);
    match o.groups.as_slice() {
        [] if mine.groups.is_empty() => Some((spi, choice, None)),
        [g] if mine.groups.contains(g) => Some((spi, choice, Some(*g))),
        _ => None,
    }
}

/// The SA payload of an IKE SA rekey request (RFC 7296 section 1.3.2): our IKE proposals,
/// each with the new IKE SA's initiator SPI.
pub fn ike_rekey_sa_payload(proposals: &[IkeProposal], spi: u64) -> SaPayload {
    let mut sa = ike_sa_payload(proposals);
    for p in &mut sa.proposals {
        p.spi = spi.to_be_bytes().to_vec();
    }
    sa
}

fn split_ike_spis(sa: &SaPayload) -> (SaPayload, Vec<(u8, Option<u64>)>) {
    let mut plain = sa.clone();
    let mut spis = Vec::new();
    for p in &mut plain.proposals {
        let spi = <[u8; 8]>::try_from(p.spi.as_slice())
            .ok()
            .map(u64::from_be_bytes)
            .filter(|&s| s != 0);
        spis.push((p.number, spi));
        if spi.is_some() {
            p.spi.clear();
        }
    }
    (plain, spis)
}

/// The responder's choice in an IKE SA rekey request: proposal number, the peer's new SPI
/// and the transforms (a proposal without an 8-byte SPI is skipped).
pub fn select_ike_rekey(
    offered: &SaPayload,
    ours: &[IkeProposal],
    ke_group: DhGroup,
) -> Option<(u8, u64, IkeChoice)> {
    let (plain, spis) = split_ike_spis(offered);
    let (number, choice) = select_ike(&plain, ours, ke_group)?;
    let spi = spis.iter().find(|(n, _)| *n == number)?.1?;
    Some((number, spi, choice))
}

/// The SA payload answering an IKE SA rekey: the chosen proposal with our new SPI.
pub fn ike_rekey_response_payload(number: u8, choice: IkeChoice, spi: u64) -> SaPayload {
    let mut sa = ike_response_payload(number, choice);
    for p in &mut sa.proposals {
        p.spi = spi.to_be_bytes().to_vec();
    }
    sa
}

/// The initiator's check of an IKE SA rekey response: the peer's new SPI and transforms.
pub fn check_ike_rekey_response(
    resp: &SaPayload,
    ours: &[IkeProposal],
) -> Option<(u64, IkeChoice)> {
    let (plain, spis) = split_ike_spis(resp);
    let [(_, Some(spi))] = spis.as_slice() else {
        return None;
    };
    Some((*spi, check_ike_response(&plain, ours)?))
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
            groups: vec![],
        }];
        let sa = esp_sa_payload(&init, 0x1234_5678);
        let resp = vec![EspProposal {
            ciphers: vec![Cipher::ChaCha20Poly1305],
            esn: EsnPolicy::No,
            groups: vec![],
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
            groups: vec![],
        }];
        assert!(select_esp(&esp_sa_payload(&resp, 300), &yes).is_none());
        // The configuration's default proposal on both sides: ESN.
        let default = vec![crate::config::parse_esp_proposal("default").unwrap()];
        let (_, _, c) = select_esp(&esp_sa_payload(&default, 0x1000), &default).unwrap();
        assert!(c.esn, "{c:?}");
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
