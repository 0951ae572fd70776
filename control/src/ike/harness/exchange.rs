//! A new exchange defined here, outside `sa/exchange/`: one type implementing
//! [`Exchange`] and one registration make it work in both roles. This one is an extra
//! liveness check: an INFORMATIONAL request with a private-use status notify (RFC 7296
//! section 3.10.1), answered with the same notify.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::ike::sa::exchange::{Ex, Exchange, Key, Kind, Responder};
use crate::wire::{ExchangeType, NotifyPayload, Payload};

/// The notify that marks the probe (private use: 40960 to 65535).
const MARK: NotifyType = NotifyType::Unknown(40969);

fn marked(p: &[Payload]) -> bool {
    p.iter()
        .any(|x| matches!(x, Payload::Notify(n) if n.notify_type == MARK))
}

/// Our probe; counts the answers that carried the mark.
#[derive(Debug)]
struct Probe {
    marked_answers: Arc<AtomicUsize>,
}

impl Exchange for Probe {
    fn kind() -> Kind {
        Kind::Other
    }

    fn claims(exchange: ExchangeType, p: &[Payload]) -> bool {
        exchange == ExchangeType::Informational && marked(p)
    }

    fn respond(_: &mut Ex<'_>, _: &[Payload]) -> Vec<Payload> {
        vec![Payload::Notify(NotifyPayload::new(MARK, Vec::new()))]
    }

    fn key(&self) -> Key {
        Key::Other("probe")
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        Some(vec![Payload::Notify(NotifyPayload::new(MARK, Vec::new()))])
    }

    fn process_response(self: Box<Self>, _: &mut Ex<'_>, p: &[Payload]) {
        if marked(p) {
            self.marked_answers.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn a_new_exchange_is_one_type_and_one_registration() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    h.run(LIMIT);
    h.assert_established();
    let answers = Arc::new(AtomicUsize::new(0));
    let probe = || {
        Box::new(Probe {
            marked_answers: Arc::clone(&answers),
        })
    };
    // The gateway knows the exchange: it answers with the mark.
    assert!(h.resp.register_exchange(Responder::of::<Probe>()));
    let now = h.now;
    assert!(h.init.queue_exchange(now, probe()));
    h.run(LIMIT);
    assert_eq!(answers.load(Ordering::SeqCst), 1);
    // The client does not: the registry's liveness check answers it, without the mark.
    let now = h.now;
    assert!(h.resp.queue_exchange(now, probe()));
    h.run(LIMIT);
    assert_eq!(answers.load(Ordering::SeqCst), 1);
    assert!(h.init.is_established() && h.resp.is_established());
    assert_eq!(
        h.init.stats().retransmitted + h.resp.stats().retransmitted,
        0
    );
}
