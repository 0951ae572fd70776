//! A new child SA (RFC 7296 section 1.3.1): CREATE_CHILD_SA without REKEY_SA, for the
//! further children of a configuration (`more_children`) and to recreate a child after a
//! hard expiry. The responder takes the first child configuration whose selectors fit,
//! narrowed as in IKE_AUTH; a refusal is an error notify, and the IKE SA and its other
//! children are untouched.

use super::{
    ChildPayloads, Effect, Ex, Exchange, Key, Kind, answer_child, child_keys, child_payloads,
    initiator_pfs_secret, ke_payload, refusal_notify, request_keys, retry_group,
};
use crate::ike::config::Mode;
use crate::ike::crypto::KeyExchange;
use crate::ike::proposal::{
    check_esp_response_pfs, esp_response_payload_pfs, esp_sa_payload_pfs, narrow, select_esp_pfs,
};
use crate::ike::sa::{
    Event, MAX_CHILDREN, child_mode, first_error_notify, has_notify, notify, pick_child,
    vip_selectors,
};
use crate::wire::{ExchangeType, NotifyType, Payload, TrafficSelector};

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
        let Some(r) = ChildPayloads::parse(p) else {
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
        let picked = pick_child(&ctx.cfg, vips, &r.tsi.selectors, &r.tsr.selectors, |c| {
            select_esp_pfs(r.sa, &c.proposals, r.ke.map(|k| k.group))
        });
        let (child, (number, spi_out, choice, group), ts_i, ts_r) = match picked {
            Ok(x) => x,
            Err(None) => return vec![notify(NotifyType::TsUnacceptable)],
            Err(Some(r)) => return refusal_notify(r),
        };
        let a = match answer_child(ctx, x.core, group, r.ke, r.nonce, choice.cipher) {
            Ok(a) => a,
            Err(refusal) => return refusal,
        };
        let transport =
            child.mode == Mode::Transport && has_notify(p, NotifyType::UseTransportMode);
        let new = ctx.child_sa(
            child.name.clone(),
            (a.spi_in, spi_out),
            (a.keys.i_to_r, a.keys.r_to_i),
            choice,
            child_mode(transport),
            (ts_r.clone(), ts_i.clone()),
        );
        let sa = esp_response_payload_pfs(number, a.spi_in, choice, group);
        let mut reply = child_payloads(transport, sa, a.nr, a.ke, (ts_i, ts_r));
        reply.extend(ctx.mif_child_payload(&new.name));
        ctx.establish_child(x.now, new, p);
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
        let (ke, spi_in, ni) = request_keys(ctx, self.group, &cfg.proposals)?;
        // With virtual IPs our side is them (swanctl's `dynamic`).
        let mut local_ts = cfg.local_ts.clone();
        if !x.vips.is_empty() {
            let narrowed = narrow(&local_ts, &vip_selectors(x.vips));
            if !narrowed.is_empty() {
                local_ts = narrowed;
            }
        }
        let mut p = child_payloads(
            cfg.mode == Mode::Transport,
            esp_sa_payload_pfs(&cfg.proposals, spi_in, ke.is_some()),
            ni.clone(),
            ke.as_ref().map(ke_payload),
            (local_ts.clone(), cfg.remote_ts.clone()),
        );
        p.extend(ctx.mif_child_payload(&cfg.name));
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
                if let Some(g) = retry_group(p, &cfg.proposals, ke.as_ref()) {
                    x.effects.push(Effect::Queue(Box::new(ChildCreate::new(
                        name.clone(),
                        Some(g),
                    ))));
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
        let Ok(keys) = child_keys(x.core, gir.as_ref(), &ni, nr, choice.cipher) else {
            return failed(x, NotifyType::TemporaryFailure);
        };
        let transport = cfg.mode == Mode::Transport && has_notify(p, NotifyType::UseTransportMode);
        let new = x.ctx.child_sa(
            name.clone(),
            (spi_in, spi_out),
            (keys.r_to_i, keys.i_to_r),
            choice,
            child_mode(transport),
            (tsi.selectors.clone(), tsr.selectors.clone()),
        );
        x.ctx.establish_child(x.now, new, p);
    }

    /// Asked again on the current IKE SA (in the first group again).
    fn requeue(self: Box<Self>) -> Option<Box<dyn Exchange>> {
        Some(Box::new(ChildCreate::new(self.name, None)))
    }
}
