//! A child SA rekey (RFC 7296 section 1.3.3): CREATE_CHILD_SA with REKEY_SA naming the old
//! SA, with a KE for PFS when the child's proposals have groups. Make-before-break: the
//! new pair is reported ([`Event::ChildSaRekeyed`]) while the old one stays until its
//! Delete completes. Which SA of a simultaneous rekey survives (section 2.8.1) is decided
//! by the established state from the [`Effect::ChildRekeyed`] this reports.

use super::{
    ChildPayloads, Effect, Ex, Exchange, Key, Kind, RETRY_AFTER, answer_child, child_keys,
    child_payloads, initiator_pfs_secret, ke_payload, lowest, refusal_notify, request_keys,
    retry_group,
};
use crate::ike::config::Mode;
use crate::ike::crypto::KeyExchange;
use crate::ike::proposal::{
    check_esp_response_pfs, esp_response_payload_pfs, esp_sa_payload_pfs, narrow, select_esp_pfs,
};
use crate::ike::sa::timer::Timer;
use crate::ike::sa::{Event, MAX_TRACKED_CHILDREN, first_error_notify, notify};
use crate::wire::{DhGroup, ExchangeType, NotifyPayload, NotifyType, Payload, ProtocolId};

/// What our request carried, for its response.
#[derive(Debug)]
struct Sent {
    spi_in: u32,
    ni: Vec<u8>,
    ke: Option<KeyExchange>,
}

/// Our rekey of the child SA with inbound SPI `old_spi_in`.
#[derive(Debug)]
pub(in crate::ike::sa) struct ChildRekey {
    old_spi_in: u32,
    /// The group of our KE, if given; else the first of the proposals' (none: no PFS).
    group: Option<DhGroup>,
    sent: Option<Sent>,
}

impl ChildRekey {
    pub(in crate::ike::sa) fn new(old_spi_in: u32, group: Option<DhGroup>) -> Self {
        ChildRekey {
            old_spi_in,
            group,
            sent: None,
        }
    }
}

/// The REKEY_SA notify of a request, if any.
fn rekey_sa(p: &[Payload]) -> Option<&NotifyPayload> {
    p.iter().find_map(|x| match x {
        Payload::Notify(n) if n.notify_type == NotifyType::RekeySa => Some(n),
        _ => None,
    })
}

impl Exchange for ChildRekey {
    fn kind() -> Kind {
        Kind::ChildRekey
    }

    fn claims(exchange: ExchangeType, p: &[Payload]) -> bool {
        exchange == ExchangeType::CreateChildSa && rekey_sa(p).is_some()
    }

    fn respond(x: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
        let Some(n) = rekey_sa(p) else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        let spi = <[u8; 4]>::try_from(n.spi.as_slice()).map(u32::from_be_bytes);
        let (ProtocolId::Esp, Ok(old_out)) = (n.protocol, spi) else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        let ctx = &mut *x.ctx;
        let Some(i) = ctx.children.iter().position(|c| c.spi_out == old_out) else {
            return vec![Payload::Notify(NotifyPayload {
                protocol: ProtocolId::Esp,
                spi: old_out.to_be_bytes().to_vec(),
                notify_type: NotifyType::ChildSaNotFound,
                data: Vec::new(),
            })];
        };
        // Already replaced (our own rekey completed, or the peer's): RFC 7296 2.8.1 lets
        // the late side learn it from TEMPORARY_FAILURE. So does a peer whose replaced
        // children, never deleted, fill the list: before any key exchange is computed.
        if ctx.children[i].rekeyed
            || ctx.children[i].peer_rekey.is_some()
            || ctx.children.len() >= MAX_TRACKED_CHILDREN
        {
            return vec![notify(NotifyType::TemporaryFailure)];
        }
        let Some(r) = ChildPayloads::parse(p) else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        let (ni, ke) = (r.nonce, r.ke);
        let proposals = &ctx.cfg.child_named(&ctx.children[i].name).proposals;
        let (number, spi_out, choice, group) =
            match select_esp_pfs(r.sa, proposals, ke.map(|k| k.group)) {
                Ok(c) => c,
                Err(r) => return refusal_notify(r),
            };
        let old = &ctx.children[i];
        let ts_i = narrow(&r.tsi.selectors, &old.remote_ts);
        let ts_r = narrow(&r.tsr.selectors, &old.local_ts);
        if ts_i.is_empty() || ts_r.is_empty() {
            return vec![notify(NotifyType::TsUnacceptable)];
        }
        let a = match answer_child(ctx, x.core, group, ke, ni, choice.cipher) {
            Ok(a) => a,
            Err(refusal) => return refusal,
        };
        let (spi_in, nr) = (a.spi_in, a.nr.clone());
        let old = &ctx.children[i];
        let mut new = ctx.child_sa(
            old.name.clone(),
            (spi_in, spi_out),
            (a.keys.i_to_r, a.keys.r_to_i),
            choice,
            old.mode,
            (ts_r.clone(), ts_i.clone()),
        );
        // The multi-interface extension: the new child keeps the old one's sets (4.1).
        let mif = ctx.mif_rekeyed(i, &mut new, p);
        let old = &ctx.children[i];
        let sa = esp_response_payload_pfs(number, spi_in, choice, group);
        let reply = child_payloads(old.mode == Mode::Transport, sa, a.nr, a.ke, (ts_i, ts_r));
        let old_spi_in = old.spi_in;
        ctx.children[i].peer_rekey = Some((lowest(ni, &nr), spi_in));
        #[cfg(test)]
        ctx.rekey_log.push((lowest(ni, &nr), spi_in));
        ctx.timers.stop(Timer::ChildRekey(old_spi_in));
        ctx.track_child(x.now, &new);
        ctx.set_child_mif(new.spi_in, mif);
        ctx.events.push_back(Event::ChildSaRekeyed {
            old_spi_in,
            new,
            initiated: false,
        });
        reply
    }

    fn key(&self) -> Key {
        Key::ChildRekey(self.old_spi_in)
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::CreateChildSa
    }

    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>> {
        let ctx = &mut *x.ctx;
        let old_spi_in = self.old_spi_in;
        let c = ctx
            .children
            .iter()
            .find(|c| c.spi_in == old_spi_in && !c.rekeyed && c.peer_rekey.is_none())?;
        let (local_ts, remote_ts, mode) = (c.local_ts.clone(), c.remote_ts.clone(), c.mode);
        let proposals = ctx.cfg.child_named(&c.name).proposals.clone();
        let (ke, spi_in, ni) = request_keys(ctx, self.group, &proposals)?;
        let mut p = vec![Payload::Notify(NotifyPayload {
            protocol: ProtocolId::Esp,
            spi: old_spi_in.to_be_bytes().to_vec(),
            notify_type: NotifyType::RekeySa,
            data: Vec::new(),
        })];
        p.extend(child_payloads(
            mode == Mode::Transport,
            esp_sa_payload_pfs(&proposals, spi_in, ke.is_some()),
            ni.clone(),
            ke.as_ref().map(ke_payload),
            (local_ts, remote_ts),
        ));
        self.sent = Some(Sent { spi_in, ni, ke });
        Some(p)
    }

    /// The response arrived on the IKE SA whose SK_d derives the keys (the IKE SA may have
    /// been rekeyed by the peer meanwhile).
    fn process_response(self: Box<Self>, x: &mut Ex<'_>, p: &[Payload]) {
        let (old_spi_in, Some(Sent { spi_in, ni, ke })) = (self.old_spi_in, self.sent) else {
            return;
        };
        let ctx = &mut *x.ctx;
        let i = ctx.children.iter().position(|c| c.spi_in == old_spi_in);
        let proposals = i
            .map(|i| ctx.cfg.child_named(&ctx.children[i].name).proposals.clone())
            .unwrap_or_else(|| ctx.cfg.child.proposals.clone());
        if let Some(t) = first_error_notify(p) {
            match t {
                NotifyType::InvalidKePayload => {
                    if let Some(g) = retry_group(p, &proposals, ke.as_ref()) {
                        x.effects.push(Effect::Queue(Box::new(ChildRekey::new(
                            old_spi_in,
                            Some(g),
                        ))));
                    }
                }
                NotifyType::TemporaryFailure => {
                    let live = ctx
                        .children
                        .iter()
                        .any(|c| c.spi_in == old_spi_in && !c.rekeyed && c.peer_rekey.is_none());
                    if live {
                        ctx.timers
                            .set(Timer::ChildRekey(old_spi_in), x.now + RETRY_AFTER);
                    }
                }
                _ => {}
            }
            return;
        }
        let Some(r) = ChildPayloads::parse(p) else {
            ctx.stats.malformed += 1;
            return;
        };
        let Some((spi_out, choice, group)) = check_esp_response_pfs(r.sa, &proposals) else {
            return;
        };
        let Ok(gir) = initiator_pfs_secret(group, ke, r.ke) else {
            return;
        };
        let (nr, tsi, tsr) = (r.nonce, r.tsi, r.tsr);
        let delete_new = || Effect::Queue(Box::new(super::Delete::children(vec![spi_in])));
        let Some(i) = i else {
            // The child went away meanwhile (the peer deleted it): drop the new one too.
            x.effects.push(delete_new());
            return;
        };
        let old = &ctx.children[i];
        if !r.selectors_within(&old.local_ts, &old.remote_ts) {
            x.effects.push(delete_new());
            return;
        }
        let Ok(keys) = child_keys(x.core, gir.as_ref(), &ni, nr, choice.cipher) else {
            return;
        };
        let mut new = ctx.child_sa(
            old.name.clone(),
            (spi_in, spi_out),
            (keys.r_to_i, keys.i_to_r),
            choice,
            old.mode,
            (tsi.selectors.clone(), tsr.selectors.clone()),
        );
        let mif = ctx.mif_rekeyed(i, &mut new, p);
        ctx.children[i].rekeyed = true;
        ctx.children[i].successor = Some(new.spi_in);
        ctx.timers.stop(Timer::ChildRekey(old_spi_in));
        ctx.track_child(x.now, &new);
        ctx.set_child_mif(new.spi_in, mif);
        ctx.events.push_back(Event::ChildSaRekeyed {
            old_spi_in,
            new,
            initiated: true,
        });
        #[cfg(test)]
        ctx.rekey_log.push((lowest(&ni, nr), spi_in));
        x.effects.push(Effect::ChildRekeyed {
            old_spi_in,
            spi_in,
            lowest: lowest(&ni, nr),
        });
    }

    /// Asked again on the current IKE SA (in the first group again).
    fn requeue(self: Box<Self>) -> Option<Box<dyn Exchange>> {
        Some(Box::new(ChildRekey::new(self.old_spi_in, None)))
    }
}
