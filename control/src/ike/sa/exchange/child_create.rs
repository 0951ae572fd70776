//! A new child SA (RFC 7296 section 1.3.1): CREATE_CHILD_SA without REKEY_SA, for the
//! further children of a configuration (`more_children`) and to recreate a child after a
//! hard expiry. The responder takes the first child configuration whose selectors fit,
//! narrowed as in IKE_AUTH; a refusal is an error notify, and the IKE SA and its other
//! children are untouched.

use super::{
    ChildPayloads, Effect, Ex, Exchange, Key, Kind, answer_child_keys, initiator_pfs_secret,
    invalid_ke_group, ke_payload, our_ke, refusal_notify,
};
use crate::ike::config::Mode;
use crate::ike::crypto::{ChildKeys, KeyExchange};
use crate::ike::proposal::{
    check_esp_response_pfs, esp_response_payload_pfs, esp_sa_payload_pfs, narrow, select_esp_pfs,
};
use crate::ike::sa::{
    ChildSa, Event, MAX_CHILDREN, first_error_notify, has_notify, notify, pick_child, vip_selectors,
};
use crate::wire::{ExchangeType, NotifyType, Payload, TrafficSelector, TsPayload};

/// What our request carried, for its response.
#[derive(Debug)]
struct Sent {
    spi_in: u32,
    ni: Vec<u8>,
    ke: Option<KeyExchange>,
    /// The TSi and TSr we proposed.
    ts: (Vec<TrafficSelector>, Vec<TrafficSelector>),
}

/// Our request for a new child SA of configuration `name`.
#[derive(Debug)]
pub(in crate::ike::sa) struct ChildCreate {
    name: String,
    /// The group of our KE, if given; else the first of the proposals' (none: no PFS).
    group: Option<crate::wire::DhGroup>,
    sent: Option<Sent>,
}

impl ChildCreate {
    pub(in crate::ike::sa) fn new(name: String, group: Option<crate::wire::DhGroup>) -> Self {
        ChildCreate {
            name,
            group,
            sent: None,
        }
    }
}

impl Exchange for ChildCreate {
    fn kind() -> Kind {
        Kind::ChildCreate
    }

    /// Every CREATE_CHILD_SA request that is not a rekey (asked after those).
    fn claims(exchange: ExchangeType, _: &[Payload]) -> bool {
        exchange == ExchangeType::CreateChildSa
    }

    fn respond(x: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
        let Some(ChildPayloads {
            sa,
            nonce: ni,
            ke,
            tsi,
            tsr,
        }) = ChildPayloads::parse(p)
        else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        let ctx = &mut *x.ctx;
        if ctx.children.len() >= MAX_CHILDREN {
            return vec![notify(NotifyType::NoAdditionalSas)];
        }
        // A gateway narrows the peer's side to the virtual IPs it leased.
        let vips = if ctx.original_initiator {
            &[][..]
        } else {
            x.vips
        };
        let picked = pick_child(&ctx.cfg, vips, &tsi.selectors, &tsr.selectors, |c| {
            select_esp_pfs(sa, &c.proposals, ke.map(|k| k.group))
        });
        let (child, (number, spi_out, choice, group), ts_i, ts_r) = match picked {
            Ok(x) => x,
            Err(None) => return vec![notify(NotifyType::TsUnacceptable)],
            Err(Some(r)) => return refusal_notify(r),
        };
        let (Ok(spi_in), Ok(nr)) = (ctx.esp_spi(), ctx.nonce()) else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        let (ker, keys) = match answer_child_keys(ctx, x.core, group, ke, (ni, &nr), choice.cipher)
        {
            Ok(k) => k,
            Err(refusal) => return refusal,
        };
        let transport =
            child.mode == Mode::Transport && has_notify(p, NotifyType::UseTransportMode);
        let new = ChildSa {
            name: child.name.clone(),
            spi_in,
            spi_out,
            keymat_in: keys.i_to_r,
            keymat_out: keys.r_to_i,
            cipher: choice.cipher,
            esn: choice.esn,
            mode: if transport {
                Mode::Transport
            } else {
                Mode::Tunnel
            },
            local_ts: ts_r.clone(),
            remote_ts: ts_i.clone(),
            udp_encap: ctx.paths.nat().any(),
            paths: ctx.paths.child_paths(),
        };
        let mut reply = Vec::new();
        if transport {
            reply.push(notify(NotifyType::UseTransportMode));
        }
        reply.push(Payload::Sa(esp_response_payload_pfs(
            number, spi_in, choice, group,
        )));
        reply.push(Payload::Nonce(nr));
        reply.extend(ker);
        reply.push(Payload::TsI(TsPayload { selectors: ts_i }));
        reply.push(Payload::TsR(TsPayload { selectors: ts_r }));
        ctx.track_child(x.now, &new);
        ctx.events.push_back(Event::ChildSaEstablished(new));
        reply
    }

    fn key(&self) -> Key {
        Key::ChildCreate(self.name.clone(), self.group)
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::CreateChildSa
    }

    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>> {
        let ctx = &mut *x.ctx;
        let cfg = ctx
            .cfg
            .all_children()
            .find(|c| c.name == self.name)?
            .clone();
        let group = self
            .group
            .or_else(|| cfg.proposals.iter().find_map(|p| p.groups.first().copied()));
        let ke = our_ke(ctx, group).ok()?;
        let (Ok(spi_in), Ok(ni)) = (ctx.esp_spi(), ctx.nonce()) else {
            return None;
        };
        // With virtual IPs our side is them (swanctl's `dynamic`).
        let mut local_ts = cfg.local_ts.clone();
        if !x.vips.is_empty() {
            let narrowed = narrow(&local_ts, &vip_selectors(x.vips));
            if !narrowed.is_empty() {
                local_ts = narrowed;
            }
        }
        let mut p = Vec::new();
        if cfg.mode == Mode::Transport {
            p.push(notify(NotifyType::UseTransportMode));
        }
        p.push(Payload::Sa(esp_sa_payload_pfs(
            &cfg.proposals,
            spi_in,
            ke.is_some(),
        )));
        p.push(Payload::Nonce(ni.clone()));
        p.extend(ke.as_ref().map(ke_payload));
        p.push(Payload::TsI(TsPayload {
            selectors: local_ts.clone(),
        }));
        p.push(Payload::TsR(TsPayload {
            selectors: cfg.remote_ts.clone(),
        }));
        self.sent = Some(Sent {
            spi_in,
            ni,
            ke,
            ts: (local_ts, cfg.remote_ts),
        });
        Some(p)
    }

    fn process_response(self: Box<Self>, x: &mut Ex<'_>, p: &[Payload]) {
        let (name, Some(sent)) = (self.name, self.sent) else {
            return;
        };
        let Sent {
            spi_in,
            ni,
            ke,
            ts: (sent_i, sent_r),
        } = sent;
        let ctx = &mut *x.ctx;
        let Some(cfg) = ctx.cfg.all_children().find(|c| c.name == name).cloned() else {
            return;
        };
        let failed = |x: &mut Ex<'_>, reason: NotifyType| {
            x.ctx.events.push_back(Event::ChildSaFailed {
                name: name.clone(),
                reason,
            });
        };
        if let Some(t) = first_error_notify(p) {
            if t == NotifyType::InvalidKePayload {
                let g = invalid_ke_group(p);
                let ours = cfg
                    .proposals
                    .iter()
                    .any(|q| g.is_some_and(|g| q.groups.contains(&g)));
                if ours && g != ke.as_ref().map(KeyExchange::group) {
                    x.effects
                        .push(Effect::Queue(Box::new(ChildCreate::new(name.clone(), g))));
                    return;
                }
            }
            return failed(x, t);
        }
        let Some(r) = ChildPayloads::parse(p) else {
            x.ctx.stats.malformed += 1;
            return failed(x, NotifyType::InvalidSyntax);
        };
        let (nr, tsi, tsr) = (r.nonce, r.tsi, r.tsr);
        let Some((spi_out, choice, group)) = check_esp_response_pfs(r.sa, &cfg.proposals) else {
            // The SA may exist at the peer: delete our half of it.
            x.effects
                .push(Effect::Queue(Box::new(super::Delete::children(vec![
                    spi_in,
                ]))));
            return failed(x, NotifyType::NoProposalChosen);
        };
        let Ok(gir) = initiator_pfs_secret(group, ke, r.ke) else {
            return failed(x, NotifyType::InvalidKePayload);
        };
        if !r.selectors_within(&sent_i, &sent_r) {
            return failed(x, NotifyType::TsUnacceptable);
        }
        let core = x.core;
        let Ok(keys) = ChildKeys::derive(
            core.prf,
            &core.sk_d,
            gir.as_deref().map(|g| &g[..]),
            &ni,
            nr,
            choice.cipher,
        ) else {
            return failed(x, NotifyType::TemporaryFailure);
        };
        let transport = cfg.mode == Mode::Transport && has_notify(p, NotifyType::UseTransportMode);
        let new = ChildSa {
            name: name.clone(),
            spi_in,
            spi_out,
            keymat_in: keys.r_to_i,
            keymat_out: keys.i_to_r,
            cipher: choice.cipher,
            esn: choice.esn,
            mode: if transport {
                Mode::Transport
            } else {
                Mode::Tunnel
            },
            local_ts: tsi.selectors.clone(),
            remote_ts: tsr.selectors.clone(),
            udp_encap: x.ctx.paths.nat().any(),
            paths: x.ctx.paths.child_paths(),
        };
        x.ctx.track_child(x.now, &new);
        x.ctx.events.push_back(Event::ChildSaEstablished(new));
    }

    /// Asked again on the current IKE SA (in the first group again).
    fn requeue(self: Box<Self>) -> Option<Box<dyn Exchange>> {
        Some(Box::new(ChildCreate::new(self.name, None)))
    }
}
