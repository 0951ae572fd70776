//! The liveness check (RFC 7296 section 2.4): an empty INFORMATIONAL request, answered
//! with an empty response. Its answer is the sign of life; an unanswered one fails the IKE
//! SA through the retransmission give-up, like any request.

use super::{Ex, Exchange, Key, Kind};
use crate::wire::{ExchangeType, Payload};

/// A liveness check of ours.
#[derive(Debug, Default)]
pub(in crate::ike::sa) struct Liveness;

impl Exchange for Liveness {
    fn kind() -> Kind {
        Kind::Liveness
    }

    /// Every INFORMATIONAL request no exchange before it claimed: answered empty.
    fn claims(exchange: ExchangeType, _: &[Payload]) -> bool {
        exchange == ExchangeType::Informational
    }

    fn respond(_: &mut Ex<'_>, _: &[Payload]) -> Vec<Payload> {
        Vec::new()
    }

    fn key(&self) -> Key {
        Key::Liveness
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        Some(Vec::new())
    }

    fn process_response(self: Box<Self>, _: &mut Ex<'_>, _: &[Payload]) {}
}
