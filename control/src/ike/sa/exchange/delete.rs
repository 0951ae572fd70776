//! Deletes (RFC 7296 section 1.4.1): an INFORMATIONAL request with Delete payloads, of
//! child SAs (ESP, by the SPIs the sender receives with) or of the IKE SA it is sent on.
//!
//! Make-before-break: a child SA we delete stays tracked, and installed, until the
//! response; only then is [`Event::ChildSaDeleted`] raised. A child the peer deletes is
//! reported at once and the response names the inbound halves of the pairs.

use super::{Effect, Ex, Exchange, Key, Kind};
use crate::ike::sa::Event;
use crate::wire::{DeletePayload, ExchangeType, Payload, ProtocolId};

/// What a Delete of ours removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::ike::sa) enum Target {
    /// The child SAs with these inbound SPIs.
    Children(Vec<u32>),
    /// The IKE SA with these SPIs (an old one, after a rekey); `None`: the current one, as
    /// the last request of an IKE SA that ends (fire and forget).
    Ike(Option<(u64, u64)>),
}

/// A Delete of ours.
#[derive(Debug)]
pub(in crate::ike::sa) struct Delete {
    target: Target,
}

impl Delete {
    /// A Delete of the child SAs with these inbound SPIs.
    pub(in crate::ike::sa) fn children(spis_in: Vec<u32>) -> Delete {
        Delete {
            target: Target::Children(spis_in),
        }
    }

    /// A Delete of the IKE SA with these SPIs (`None`: the current one).
    pub(in crate::ike::sa) fn ike(spis: Option<(u64, u64)>) -> Delete {
        Delete {
            target: Target::Ike(spis),
        }
    }
}

/// Whether `p` holds a Delete of the IKE SA.
pub(in crate::ike::sa) fn deletes_ike(p: &[Payload]) -> bool {
    p.iter()
        .any(|x| matches!(x, Payload::Delete(d) if d.protocol == ProtocolId::Ike))
}

impl Exchange for Delete {
    fn kind() -> Kind {
        Kind::Delete
    }

    fn claims(exchange: ExchangeType, p: &[Payload]) -> bool {
        exchange == ExchangeType::Informational && p.iter().any(|x| matches!(x, Payload::Delete(_)))
    }

    /// The peer deletes the IKE SA (the established state closes it once the empty
    /// response is out), or child SAs: removed and reported, answered with their inbound
    /// halves. SPIs we do not know are ignored.
    fn respond(x: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
        if deletes_ike(p) {
            x.effects.push(Effect::Close);
            return Vec::new();
        }
        let ctx = &mut *x.ctx;
        let mut spis_out = Vec::new();
        let mut spis_in = Vec::new();
        for d in p.iter().filter_map(|x| match x {
            Payload::Delete(d) if d.protocol == ProtocolId::Esp => Some(d),
            _ => None,
        }) {
            for spi in &d.spis {
                let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                    continue;
                };
                let out = u32::from_be_bytes(b);
                if let Some(i) = ctx.children.iter().position(|c| c.spi_out == out) {
                    let c = ctx.children.remove(i);
                    ctx.stop_child_timers(c.spi_in);
                    spis_in.push(c.spi_in);
                    spis_out.push(out);
                }
            }
        }
        if spis_out.is_empty() {
            Vec::new()
        } else {
            ctx.events.push_back(Event::ChildSaDeleted { spis_out });
            vec![Payload::Delete(DeletePayload::esp(&spis_in))]
        }
    }

    fn key(&self) -> Key {
        match &self.target {
            Target::Children(spis) => Key::DeleteChildren(spis.clone()),
            Target::Ike(spis) => Key::DeleteIke(spis.unwrap_or_default()),
        }
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    fn ike_sa(&self) -> Option<(u64, u64)> {
        match self.target {
            Target::Ike(spis) => spis,
            Target::Children(_) => None,
        }
    }

    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        match &self.target {
            Target::Children(spis) if spis.is_empty() => None,
            Target::Children(spis) => Some(vec![Payload::Delete(DeletePayload::esp(spis))]),
            Target::Ike(_) => Some(vec![Payload::Delete(DeletePayload::ike())]),
        }
    }

    fn process_response(self: Box<Self>, x: &mut Ex<'_>, _: &[Payload]) {
        let Target::Children(spis_in) = self.target else {
            return;
        };
        let spis_out: Vec<u32> = x
            .ctx
            .remove_children(|c| spis_in.contains(&c.spi_in))
            .iter()
            .map(|c| c.spi_out)
            .collect();
        if !spis_out.is_empty() {
            x.ctx.events.push_back(Event::ChildSaDeleted { spis_out });
        }
    }

    /// A Delete of child SAs goes again on the current IKE SA; one of an IKE SA is moot
    /// once that IKE SA is gone.
    fn requeue(self: Box<Self>) -> Option<Box<dyn Exchange>> {
        match self.target {
            Target::Children(spis) => Some(Box::new(Delete::children(spis))),
            Target::Ike(_) => None,
        }
    }
}
