//! The operator's counters of the IKE side (issue 13): IKE messages per exchange and
//! direction, retransmissions, rekeys, authentication failures, moves and handovers, and
//! the totals of child SAs that are gone, so that a connection's byte and packet counters
//! keep growing across rekeys instead of starting again with every new SPI.
//!
//! The IKE thread keeps them in a [`Book`] shared with its handle (one mutex, taken per
//! event, never per packet; the per-message counts are the thread's own array, copied in
//! at each turn). `status --json` shows them under `ike_counters`; `mifsec metrics` and the
//! HTTP endpoint turn them into Prometheus series (`crate::metrics`).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::dataplane::counters::{CounterSnapshot, DropReason};
use crate::wire::ExchangeType;

/// The exchanges counted by name; any other is `other`.
pub const EXCHANGES: [&str; 5] = [
    "IKE_SA_INIT",
    "IKE_AUTH",
    "CREATE_CHILD_SA",
    "INFORMATIONAL",
    "other",
];

/// IKE messages by exchange (index into [`EXCHANGES`]) and direction (0 in, 1 out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Messages(pub [[u64; 2]; EXCHANGES.len()]);

impl Messages {
    /// Counts one message of `exchange`, received (`out == false`) or sent.
    pub fn count(&mut self, exchange: ExchangeType, out: bool) {
        let i = match exchange.to_raw() {
            34 => 0,
            35 => 1,
            36 => 2,
            37 => 3,
            _ => 4,
        };
        self.0[i][usize::from(out)] += 1;
    }

    /// Counts the IKE message in `bytes` by its header (a datagram without one is not an
    /// IKE message and is not counted).
    pub fn count_datagram(&mut self, bytes: &[u8], out: bool) {
        if let Ok(h) = crate::wire::HeaderPacket::new_checked(bytes) {
            self.count(h.exchange_type(), out);
        }
    }

    /// (exchange, received, sent) for each exchange.
    pub fn rows(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        EXCHANGES
            .iter()
            .zip(self.0.iter())
            .map(|(n, [i, o])| (*n, *i, *o))
    }
}

impl Serialize for Messages {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        struct Row {
            received: u64,
            sent: u64,
        }
        let mut m = s.serialize_map(Some(EXCHANGES.len()))?;
        for (name, received, sent) in self.rows() {
            m.serialize_entry(name, &Row { received, sent })?;
        }
        m.end()
    }
}

/// What happened on one connection's IKE SAs, since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnCounters {
    /// IKE SAs established (clones included).
    pub ike_established: u64,
    /// IKE SA rekeys completed (either side's).
    pub ike_rekeys: u64,
    /// Child SA rekeys completed (either side's).
    pub child_rekeys: u64,
    /// The peer's authentication did not verify (its AUTH, identity or certificate).
    pub auth_failures: u64,
    /// The peer refused our authentication (AUTHENTICATION_FAILED).
    pub auth_refused: u64,
    /// IKE SAs that failed otherwise (timeout, proposals, ...), by reason.
    pub failures: BTreeMap<String, u64>,
    /// Moves of an IKE SA with its child SAs to a new path (MOBIKE), by reason.
    pub moves: BTreeMap<String, u64>,
    /// Child SAs moved by a soft handover of the multi-interface extension.
    pub soft_handovers: u64,
    /// Child SAs moved by a hard handover.
    pub hard_handovers: u64,
}

/// A child SA's counters when it was removed (rekeyed away or deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildTotals {
    /// Outbound (sealed) packets and inner bytes.
    pub out: CounterSnapshot,
    /// Inbound (accepted) packets and inner bytes, and the drops by reason.
    pub inbound: CounterSnapshot,
}

impl ChildTotals {
    /// Adds an SA's counters.
    pub fn add(&mut self, out: &CounterSnapshot, inbound: &CounterSnapshot) {
        fn add(a: &mut CounterSnapshot, b: &CounterSnapshot) {
            a.packets += b.packets;
            a.bytes += b.bytes;
            a.dummies += b.dummies;
            for (x, y) in a.drops.iter_mut().zip(&b.drops) {
                *x += y;
            }
        }
        add(&mut self.out, out);
        add(&mut self.inbound, inbound);
    }

    /// Inbound drops for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.inbound.drops(reason)
    }
}

/// The counters, shared by the IKE thread and its handle.
#[derive(Debug, Clone, Default)]
pub struct Book {
    /// IKE messages (as of the thread's last turn).
    pub messages: Messages,
    /// Requests retransmitted, by every IKE SA since the start (as of the last publish).
    pub retransmissions: u64,
    /// Per connection name.
    pub conns: BTreeMap<String, ConnCounters>,
    /// The engine SA of every installed child SA (lingering ones too): (connection, child).
    pub children: HashMap<String, (String, String)>,
    /// Removed child SAs' counters by (connection, child).
    pub retired: BTreeMap<(String, String), ChildTotals>,
}

impl Book {
    /// The counters of connection `conn` (made on first use).
    pub fn conn(&mut self, conn: &str) -> &mut ConnCounters {
        if !self.conns.contains_key(conn) {
            self.conns.insert(conn.to_owned(), ConnCounters::default());
        }
        self.conns.get_mut(conn).expect("just inserted")
    }

    /// What `status --json` shows as `ike_counters`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "messages": self.messages,
            "retransmissions": self.retransmissions,
            "connections": self.conns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_by_exchange_and_direction() {
        let mut m = Messages::default();
        m.count(ExchangeType::IkeSaInit, true);
        m.count(ExchangeType::IkeSaInit, false);
        m.count(ExchangeType::CreateChildSa, true);
        m.count(ExchangeType::from(99), false);
        m.count_datagram(&[0u8; 3], false);
        let rows: Vec<_> = m.rows().collect();
        assert_eq!(rows[0], ("IKE_SA_INIT", 1, 1));
        assert_eq!(rows[2], ("CREATE_CHILD_SA", 0, 1));
        assert_eq!(rows[4], ("other", 1, 0));
        let v = serde_json::to_value(m).unwrap();
        assert_eq!(v["CREATE_CHILD_SA"]["sent"], 1);
        assert_eq!(v["IKE_AUTH"]["received"], 0);
    }

    #[test]
    fn retired_totals_add_up() {
        let mut t = ChildTotals::default();
        let mut a = CounterSnapshot {
            packets: 2,
            bytes: 100,
            ..CounterSnapshot::default()
        };
        a.drops[DropReason::Replayed as usize] = 1;
        t.add(&a, &a);
        t.add(&a, &CounterSnapshot::default());
        assert_eq!((t.out.packets, t.out.bytes), (4, 200));
        assert_eq!((t.inbound.packets, t.drops(DropReason::Replayed)), (2, 1));
    }
}
