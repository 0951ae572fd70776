//! The IKE SA rekey (RFC 7296 sections 1.3.2 and 2.18): CREATE_CHILD_SA with an IKE SA
//! proposal carrying the new SPI, a nonce and a KE. The new SA's keys come from the old
//! SK_d; its initiator is the rekey's initiator. The exchange only makes the new SA
//! ([`Effect::IkeRekeyed`], [`Effect::PeerRekeyedIke`]); the established state switches to
//! it, deletes the old one and resolves simultaneous rekeys (section 2.8.2).

use super::{Effect, Ex, Exchange, IkeRetry, Key, Kind, invalid_ke_group, ke_payload, lowest};
use crate::ike::crypto::KeyExchange;
use crate::ike::proposal::{
    check_ike_rekey_response, ike_rekey_response_payload, ike_rekey_sa_payload, select_ike_rekey,
};
use crate::ike::sa::{Firsts, NONCE_RANGE, first_error_notify, notify};
use crate::wire::{
    DhGroup, ExchangeType, KePayload, NotifyPayload, NotifyType, Payload, ProtocolId,
};

/// What our request carried, for its response.
#[derive(Debug)]
struct Sent {
    spi: u64,
    ni: Vec<u8>,
    ke: KeyExchange,
}

/// Our rekey of the IKE SA.
#[derive(Debug)]
pub(in crate::ike::sa) struct IkeRekey {
    /// The group of our KE, if given; else the first of the first proposal.
    group: Option<DhGroup>,
    sent: Option<Sent>,
}

impl IkeRekey {
    pub(in crate::ike::sa) fn new(group: Option<DhGroup>) -> Self {
        IkeRekey { group, sent: None }
    }
}

/// The first SA, nonce and KE payloads.
fn sa_nonce_ke(
    p: &[Payload],
) -> (
    Option<&crate::wire::SaPayload>,
    Option<&Vec<u8>>,
    Option<&KePayload>,
) {
    let f = Firsts::of(p);
    (f.sa, f.nonce, f.ke)
}

impl Exchange for IkeRekey {
    fn kind() -> Kind {
        Kind::IkeRekey
    }

    /// A CREATE_CHILD_SA request (without REKEY_SA: asked after the child rekey) whose SA
    /// payload proposes an IKE SA.
    fn claims(exchange: ExchangeType, p: &[Payload]) -> bool {
        exchange == ExchangeType::CreateChildSa
            && p.iter().any(|x| {
                matches!(x, Payload::Sa(s) if s.proposals.iter().any(|q| q.protocol == ProtocolId::Ike))
            })
    }

    fn respond(x: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
        let ctx = &mut *x.ctx;
        let (Some(sa), Some(ni), Some(ke)) = sa_nonce_ke(p) else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        if !NONCE_RANGE.contains(&ni.len()) {
            return vec![notify(NotifyType::InvalidSyntax)];
        }
        let Some((number, peer_spi, choice)) = select_ike_rekey(sa, &ctx.cfg.proposals, ke.group)
        else {
            return vec![notify(NotifyType::NoProposalChosen)];
        };
        if choice.group != ke.group {
            return vec![Payload::Notify(NotifyPayload::new(
                NotifyType::InvalidKePayload,
                u16::from(choice.group).to_be_bytes().to_vec(),
            ))];
        }
        let (Ok(spi), Ok(nr)) = (ctx.ike_spi(), ctx.nonce()) else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        let Ok(ours) = KeyExchange::generate(choice.group, &ctx.rng) else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        let public = ours.public_value().to_vec();
        let Ok(gir) = ours.agree(&ke.data) else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        // The rekey's initiator is the new IKE SA's initiator (RFC 7296 section 2.18).
        let Ok(core) = x
            .core
            .rekeyed(false, (peer_spi, spi), ni.clone(), nr.clone(), &gir, choice)
        else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        x.effects
            .push(Effect::PeerRekeyedIke(core, lowest(ni, &nr)));
        vec![
            Payload::Sa(ike_rekey_response_payload(number, choice, spi)),
            Payload::Nonce(nr),
            Payload::Ke(KePayload {
                group: choice.group,
                data: public,
            }),
        ]
    }

    fn key(&self) -> Key {
        Key::IkeRekey
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::CreateChildSa
    }

    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>> {
        let ctx = &mut *x.ctx;
        let group = self.group.or_else(|| {
            ctx.cfg
                .proposals
                .first()
                .and_then(|p| p.groups.first().copied())
        });
        let Some(Ok(ke)) = group.map(|g| KeyExchange::generate(g, &ctx.rng)) else {
            return None;
        };
        let (Ok(spi), Ok(ni)) = (ctx.ike_spi(), ctx.nonce()) else {
            return None;
        };
        let p = vec![
            Payload::Sa(ike_rekey_sa_payload(&ctx.cfg.proposals, spi)),
            Payload::Nonce(ni.clone()),
            ke_payload(&ke),
        ];
        self.sent = Some(Sent { spi, ni, ke });
        Some(p)
    }

    fn process_response(self: Box<Self>, x: &mut Ex<'_>, p: &[Payload]) {
        let Some(Sent { spi, ni, ke }) = self.sent else {
            return;
        };
        let ctx = &mut *x.ctx;
        if let Some(t) = first_error_notify(p) {
            let retry = match t {
                NotifyType::InvalidKePayload => {
                    let g = invalid_ke_group(p);
                    let ours = ctx
                        .cfg
                        .proposals
                        .iter()
                        .any(|q| g.is_some_and(|g| q.groups.contains(&g)));
                    g.filter(|g| ours && *g != ke.group()).map(IkeRetry::Group)
                }
                NotifyType::TemporaryFailure => Some(IkeRetry::Later),
                _ => None,
            };
            x.effects.push(Effect::IkeRekeyFailed(retry));
            return;
        }
        let (sa, nr, ker) = sa_nonce_ke(p);
        let checked = match (sa, nr, ker) {
            (Some(sa), Some(nr), Some(ker)) if NONCE_RANGE.contains(&nr.len()) => {
                check_ike_rekey_response(sa, &ctx.cfg.proposals)
                    .filter(|(_, c)| c.group == ke.group() && ker.group == c.group)
                    .map(|(spi_r, c)| (spi_r, c, nr, ker))
            }
            _ => None,
        };
        let Some((spi_r, choice, nr, ker)) = checked else {
            ctx.stats.malformed += 1;
            x.effects.push(Effect::IkeRekeyFailed(None));
            return;
        };
        let Ok(gir) = ke.agree(&ker.data) else {
            x.effects.push(Effect::IkeRekeyFailed(None));
            return;
        };
        match x
            .core
            .rekeyed(true, (spi, spi_r), ni.clone(), nr.clone(), &gir, choice)
        {
            Ok(core) => x.effects.push(Effect::IkeRekeyed(core, lowest(&ni, nr))),
            Err(_) => x.effects.push(Effect::IkeRekeyFailed(None)),
        }
    }
}
