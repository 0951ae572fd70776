//! The IKE SA rekey (RFC 7296 sections 1.3.2 and 2.18): CREATE_CHILD_SA with an IKE SA
//! proposal carrying the new SPI, a nonce and a KE. The new SA's keys come from the old
//! SK_d; its initiator is the rekey's initiator. The exchange only makes the new SA
//! ([`Effect::IkeRekeyed`], [`Effect::PeerRekeyedIke`]); the established state switches to
//! it, deletes the old one and resolves simultaneous rekeys (section 2.8.2).
//!
//! The same exchange with N(CLONE_IKE_SA) first is a clone (RFC 7791): the keys are made
//! the same way, but the old IKE SA stays, with its child SAs, and the new one is another
//! IKE SA without any ([`Effect::Cloned`], [`Effect::PeerCloned`]). We send it only to a
//! peer that sent CLONE_IKE_SA_SUPPORTED, and honour the peer's only when we sent it (it
//! is otherwise ignored, as an unknown status notify: the request is a plain rekey).

use super::{Effect, Ex, Exchange, IkeRetry, Key, Kind, invalid_ke_group, ke_payload, lowest};
use crate::ike::crypto::KeyExchange;
use crate::ike::proposal::{
    check_ike_rekey_response, ike_rekey_response_payload, ike_rekey_sa_payload, select_ike_rekey,
};
use crate::ike::sa::{FailReason, Firsts, NONCE_RANGE, first_error_notify, has_notify, notify};
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

/// How often a clone refused with TEMPORARY_FAILURE (or lost to a rekey) is tried.
const CLONE_TRIES: u8 = 3;

/// Our rekey of the IKE SA, or (with `clone`) our clone of it.
#[derive(Debug)]
pub(in crate::ike::sa) struct IkeRekey {
    /// The group of our KE, if given; else the first of the first proposal.
    group: Option<DhGroup>,
    sent: Option<Sent>,
    /// RFC 7791: a clone, this many tries so far (1 the first).
    clone: Option<u8>,
}

impl IkeRekey {
    pub(in crate::ike::sa) fn new(group: Option<DhGroup>) -> Self {
        IkeRekey {
            group,
            sent: None,
            clone: None,
        }
    }

    /// A clone of the IKE SA (RFC 7791), try `tries`.
    pub(in crate::ike::sa) fn clone_sa(group: Option<DhGroup>, tries: u8) -> Self {
        IkeRekey {
            group,
            sent: None,
            clone: Some(tries),
        }
    }

    /// The clone again, on the current IKE SA, unless tried often enough: then the
    /// caller is told it failed.
    fn clone_again(x: &mut Ex<'_>, group: Option<DhGroup>, tries: u8, why: FailReason) {
        if tries < CLONE_TRIES {
            x.effects.push(Effect::Queue(Box::new(IkeRekey::clone_sa(
                group,
                tries + 1,
            ))));
        } else {
            x.ctx
                .events
                .push_back(crate::ike::sa::Event::CloneFailed(why));
        }
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
        // RFC 7791: a clone, if we announced support; else the notify is ignored.
        let clone = ctx.cfg.clone_ike_sa && has_notify(p, NotifyType::CloneIkeSa);
        if clone && !ctx.may_clone() {
            return vec![notify(NotifyType::NoAdditionalSas)];
        }
        // The rekey's initiator is the new IKE SA's initiator (RFC 7296 section 2.18).
        let Ok(core) = x
            .core
            .rekeyed(false, (peer_spi, spi), ni.clone(), nr.clone(), &gir, choice)
        else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        x.effects.push(if clone {
            Effect::PeerCloned(core)
        } else {
            Effect::PeerRekeyedIke(core, lowest(ni, &nr))
        });
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
        if self.clone.is_some() {
            Key::IkeClone
        } else {
            Key::IkeRekey
        }
    }

    /// A clone whose IKE SA was deleted (rekeyed by the peer) before it answered: a clone
    /// of the current one instead.
    fn requeue(self: Box<Self>) -> Option<Box<dyn Exchange>> {
        let tries = self.clone?;
        (tries < CLONE_TRIES).then(|| Box::new(IkeRekey::clone_sa(None, tries + 1)) as _)
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
        let mut p = Vec::with_capacity(4);
        if self.clone.is_some() {
            // RFC 7791 section 5: HDR, SK {N(CLONE_IKE_SA), SA, Ni, KEi}.
            p.push(notify(NotifyType::CloneIkeSa));
        }
        p.extend([
            Payload::Sa(ike_rekey_sa_payload(&ctx.cfg.proposals, spi)),
            Payload::Nonce(ni.clone()),
            ke_payload(&ke),
        ]);
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
            if let Some(tries) = self.clone {
                let why = FailReason::PeerNotify(t);
                match retry {
                    Some(IkeRetry::Group(g)) => Self::clone_again(x, Some(g), tries, why),
                    Some(IkeRetry::Later) => Self::clone_again(x, None, tries, why),
                    None => x
                        .ctx
                        .events
                        .push_back(crate::ike::sa::Event::CloneFailed(why)),
                }
                return;
            }
            x.effects.push(Effect::IkeRekeyFailed(retry));
            return;
        }
        let failed = |x: &mut Ex<'_>, clone: Option<u8>, why: FailReason| match clone {
            Some(_) => x
                .ctx
                .events
                .push_back(crate::ike::sa::Event::CloneFailed(why)),
            None => x.effects.push(Effect::IkeRekeyFailed(None)),
        };
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
            failed(x, self.clone, FailReason::InvalidSyntax);
            return;
        };
        let Ok(gir) = ke.agree(&ker.data) else {
            failed(x, self.clone, FailReason::InvalidSyntax);
            return;
        };
        match x
            .core
            .rekeyed(true, (spi, spi_r), ni.clone(), nr.clone(), &gir, choice)
        {
            Ok(core) if self.clone.is_some() => x.effects.push(Effect::Cloned(core)),
            Ok(core) => x.effects.push(Effect::IkeRekeyed(core, lowest(&ni, nr))),
            Err(e) => failed(x, self.clone, FailReason::Crypto(e)),
        }
    }
}
