//! Everything an IKE SA holds besides its state: configuration, addresses, the queues of
//! datagrams and events, timers, the tracked child SAs and virtual IP leases.

use crate::ike::sa::channel::Retransmit;
use crate::ike::sa::child::Child;
use crate::ike::sa::mif::MifState;
use crate::ike::sa::paths::PathSet;
use crate::ike::sa::roam::Roam;
use crate::ike::sa::timer::{Timer, TimerTable};
use crate::ike::sa::{ChildSa, Dead, Event, FailReason, NONCE_LEN, State, Stats, Transmit};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use crate::ike::config::{AddressPool, IkeConfig, Mode};
use crate::ike::crypto::{CryptoError, Secret};
use crate::ike::proposal::EspChoice;
#[cfg(test)]
use crate::wire::CfgAttribute;
use crate::wire::{
    CfgAttributeType, CpPayload, ExchangeType, Flags, Header, HeaderPacket, Message, NotifyPayload,
    NotifyType, Payload, TrafficSelector,
};

/// RFC 7791: the most IKE SAs an IKE SA and its clones may be together (the first one
/// included); a clone beyond it is refused (NO_ADDITIONAL_SAS to the peer's).
pub const MAX_CLONE_FAMILY: usize = 16;

/// The message ID window the handshake's requests go on (`Timer::Retransmit`).
pub(in crate::ike::sa) const HANDSHAKE_WINDOW: u32 = 0;

/// Everything but the state: configuration, addresses, queues, timers.
pub(in crate::ike::sa) struct Ctx {
    pub(in crate::ike::sa) cfg: IkeConfig,
    pub(in crate::ike::sa) rng: SystemRandom,
    /// The IKE SA's addresses: its paths, each with its NAT state.
    pub(in crate::ike::sa) paths: PathSet,
    /// MOBIKE as initiator: our addresses, path checks, probes.
    pub(in crate::ike::sa) roam: Roam,
    /// The multi-interface extension: both interface tables, limits, whether in use.
    pub(in crate::ike::sa) mif: MifState,
    pub(in crate::ike::sa) transmits: VecDeque<Transmit>,
    pub(in crate::ike::sa) events: VecDeque<Event>,
    /// The handshake's outstanding request (IKE_SA_INIT, IKE_AUTH); an established SA's
    /// requests are its channels'.
    pub(in crate::ike::sa) retransmit: Option<Retransmit>,
    /// The id of the next channel (`Timer::Retransmit`), from 1.
    pub(in crate::ike::sa) next_channel: u32,
    /// Every deadline: retransmission, half-open expiry, lifetimes, liveness.
    pub(in crate::ike::sa) timers: TimerTable,
    pub(in crate::ike::sa) stats: Stats,
    /// The installed child SAs.
    pub(in crate::ike::sa) children: Vec<Child>,
    /// Whether we started the first IKE SA (a rekey may swap the IKE roles).
    pub(in crate::ike::sa) original_initiator: bool,
    /// Responder: the virtual IPs leased to the peer, returned when the SA dies.
    pub(in crate::ike::sa) leases: Vec<(Arc<AddressPool>, IpAddr)>,
    /// RFC 7791: the peer sent CLONE_IKE_SA_SUPPORTED in IKE_AUTH (a clone inherits it).
    pub(in crate::ike::sa) peer_clone: bool,
    /// RFC 7791: shared by an IKE SA and every clone made from it (and from those): its
    /// count bounds how many there are ([`MAX_CLONE_FAMILY`]).
    pub(in crate::ike::sa) family: Arc<()>,
    /// New IKE SAs cloned from this one, for the endpoint to take.
    pub(in crate::ike::sa) clones: Vec<super::IkeSa>,
    /// The SPIs of the IKE SA this one was cloned from, if it was.
    pub(in crate::ike::sa) cloned_from: Option<(u64, u64)>,
    /// The MIF exchange's own state (`exchange/mif.rs`).
    pub(in crate::ike::sa) mif_ops: crate::ike::sa::exchange::mif::MifOpsState,
    /// Tests only: each child rekey exchange's lowest nonce and the new inbound SPI.
    #[cfg(test)]
    pub(in crate::ike::sa) rekey_log: Vec<(Vec<u8>, u32)>,
    /// Tests only: attributes a responder adds to its CFG_REPLY (a peer pushing more).
    #[cfg(test)]
    pub(in crate::ike::sa) test_cp_extra: Vec<CfgAttribute>,
    /// Tests only: payloads an initiator adds to its IKE_AUTH request.
    #[cfg(test)]
    pub(in crate::ike::sa) test_auth_extra: Vec<crate::wire::Payload>,
    /// Tests only: rewrites each EAP packet this side sends (its round, from 1): a peer
    /// that sends garbage or the unexpected.
    #[cfg(test)]
    pub(in crate::ike::sa) test_eap_out: Option<EapRewrite>,
    /// Fuzzing only: (round, packet) replacing the EAP packet this side sends in that
    /// round, sealed with the live keys: the peer's EAP code past the ICV.
    #[cfg(fuzzing)]
    pub(in crate::ike::sa) fuzz_eap: Vec<(u32, Vec<u8>)>,
}

/// Tests only: a rewrite of the EAP packets a side sends (round, packet).
#[cfg(test)]
pub(crate) type EapRewrite = fn(u32, Vec<u8>) -> Vec<u8>;

impl Ctx {
    /// An EAP packet as this side sends it (tests may rewrite it).
    #[allow(unused_variables)]
    pub(in crate::ike::sa) fn eap_out(&self, round: u32, packet: Vec<u8>) -> Vec<u8> {
        #[cfg(test)]
        if let Some(f) = self.test_eap_out {
            return f(round, packet);
        }
        #[cfg(fuzzing)]
        if let Some((_, b)) = self.fuzz_eap.iter().find(|(r, _)| *r == round) {
            return b.clone();
        }
        packet
    }
}

impl Ctx {
    pub(in crate::ike::sa) fn send(&mut self, bytes: Vec<u8>) {
        let (local, remote) = self.paths.pair();
        self.send_to(local, remote, bytes);
    }

    /// Queues a sealed message: one datagram, or the fragments `Core::seal` put back to
    /// back, one datagram each.
    pub(in crate::ike::sa) fn send_to(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: Vec<u8>,
    ) {
        let mut lens = Vec::new();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let len = HeaderPacket::new_checked(rest)
                .map(|h| h.length() as usize)
                .ok()
                .filter(|l| (1..=rest.len()).contains(l))
                .unwrap_or(rest.len());
            lens.push(len);
            rest = &rest[len..];
        }
        if lens.len() <= 1 {
            self.transmits.push_back(Transmit {
                local,
                remote,
                bytes,
            });
            return;
        }
        self.stats.fragments_sent += lens.len() as u64;
        let mut at = 0;
        for len in lens {
            self.transmits.push_back(Transmit {
                local,
                remote,
                bytes: bytes[at..at + len].to_vec(),
            });
            at += len;
        }
    }

    pub(in crate::ike::sa) fn send_request(&mut self, now: Instant, bytes: Vec<u8>) {
        let (t, (l, r)) = (Timer::Retransmit(HANDSHAKE_WINDOW), self.paths.pair());
        self.retransmit = Some(Retransmit::start(self, now, t, vec![(l, r, bytes)]));
    }

    /// A new channel's id.
    pub(in crate::ike::sa) fn channel_id(&mut self) -> u32 {
        self.next_channel = self.next_channel.wrapping_add(1).max(1);
        self.next_channel
    }

    /// Retransmits the outstanding request if its time has come. `false`: its give-up
    /// time has passed unanswered.
    pub(in crate::ike::sa) fn run_retransmit(&mut self, now: Instant) -> bool {
        let Some(mut rt) = self.retransmit.take() else {
            return true;
        };
        let alive = rt.run(self, now, Timer::Retransmit(HANDSHAKE_WINDOW));
        self.retransmit = Some(rt);
        alive
    }

    /// Stops the lifetimes of child SA `spi_in` (gone, or replaced).
    pub(in crate::ike::sa) fn stop_child_timers(&mut self, spi_in: u32) {
        self.timers.stop(Timer::ChildRekey(spi_in));
        self.timers.stop(Timer::ChildExpire(spi_in));
    }

    /// Stops tracking the child SAs for which `gone` holds, and returns them.
    pub(in crate::ike::sa) fn remove_children(
        &mut self,
        mut gone: impl FnMut(&Child) -> bool,
    ) -> Vec<Child> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.children.len() {
            if gone(&self.children[i]) {
                let c = self.children.remove(i);
                self.stop_child_timers(c.spi_in);
                out.push(c);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Forgets the outstanding request: answered, or moot.
    pub(in crate::ike::sa) fn stop_retransmit(&mut self) {
        self.retransmit = None;
        self.timers.stop(Timer::Retransmit(HANDSHAKE_WINDOW));
    }

    pub(in crate::ike::sa) fn random<const N: usize>(&self) -> Result<[u8; N], FailReason> {
        let mut b = [0u8; N];
        self.rng
            .fill(&mut b)
            .map_err(|_| FailReason::Crypto(CryptoError::Rng))?;
        Ok(b)
    }

    /// `base` minus a random amount of at most `rand` (strongSwan's `rand_time`).
    pub(in crate::ike::sa) fn jittered(&self, base: Duration, rand: Duration) -> Duration {
        let span = u64::try_from(rand.as_millis()).unwrap_or(u64::MAX);
        if span == 0 {
            return base;
        }
        let r = self.random::<8>().map(u64::from_be_bytes).unwrap_or(0) % span.saturating_add(1);
        base.saturating_sub(Duration::from_millis(r))
    }

    /// `base` less a random amount of at most `rand` (at least 1).
    pub(in crate::ike::sa) fn jittered_count(&self, base: u64, rand: u64) -> u64 {
        if rand == 0 {
            return base;
        }
        let r = self.random::<8>().map(u64::from_be_bytes).unwrap_or(0) % rand.saturating_add(1);
        base.saturating_sub(r).max(1)
    }

    /// A new child SA of configuration `name` on this IKE SA's paths (`keymat`: inbound,
    /// outbound; `ts`: local, remote).
    pub(in crate::ike::sa) fn child_sa(
        &self,
        name: String,
        (spi_in, spi_out): (u32, u32),
        (keymat_in, keymat_out): (Secret, Secret),
        choice: EspChoice,
        mode: Mode,
        (local_ts, remote_ts): (Vec<TrafficSelector>, Vec<TrafficSelector>),
    ) -> ChildSa {
        ChildSa {
            name,
            spi_in,
            spi_out,
            keymat_in,
            keymat_out,
            cipher: choice.cipher,
            esn: choice.esn,
            mode,
            local_ts,
            remote_ts,
            udp_encap: self.paths.children_path().nat.any(),
            paths: self.paths.child_paths(),
            mif: None,
        }
    }

    /// Starts tracking a new child SA, with its lifetimes (its configuration's own, else
    /// the IKE SA's `child_*` ones).
    pub(in crate::ike::sa) fn track_child(&mut self, now: Instant, c: &ChildSa) {
        let l = self.cfg.lifetimes;
        let l = self
            .cfg
            .child_named(&c.name)
            .lifetimes
            .unwrap_or_else(|| l.child_lifetimes());
        let mut child = Child::new(c);
        let rekey_at = l.rekey.map(|t| now + self.jittered(t, l.rand));
        self.timers
            .set_or_stop(Timer::ChildRekey(c.spi_in), rekey_at);
        self.timers
            .set_or_stop(Timer::ChildExpire(c.spi_in), l.life.map(|t| now + t));
        child.rekey_bytes = l.rekey_bytes.map(|b| self.jittered_count(b, l.rand_bytes));
        child.rekey_packets = l
            .rekey_packets
            .map(|p| self.jittered_count(p, l.rand_packets));
        child.life_bytes = l.life_bytes;
        child.life_packets = l.life_packets;
        self.children.push(child);
    }

    /// Returns the leased virtual IPs to their pools.
    pub(in crate::ike::sa) fn release_leases(&mut self) {
        for (pool, addr) in self.leases.drain(..) {
            pool.release(addr);
        }
    }

    /// Responder: leases a virtual IP of each family a CFG_REQUEST asks for, from the
    /// first pool of that family with a free address. `Err` (INTERNAL_ADDRESS_FAILURE)
    /// when addresses were asked for, pools of an asked family exist, and none could be
    /// leased; a family without a pool is left out.
    pub(in crate::ike::sa) fn lease_vips(
        &mut self,
        cp: &CpPayload,
    ) -> Result<Vec<IpAddr>, NotifyType> {
        let wants = |t| cp.attributes.iter().any(|a| a.attr_type == t);
        let mut vips = Vec::new();
        let mut pools_asked = false;
        for (v6, t) in [
            (false, CfgAttributeType::InternalIp4Address),
            (true, CfgAttributeType::InternalIp6Address),
        ] {
            if !wants(t) {
                continue;
            }
            for pool in self.cfg.pools.iter().filter(|p| p.is_ipv6() == v6) {
                pools_asked = true;
                if let Some(a) = pool.lease() {
                    self.leases.push((Arc::clone(pool), a));
                    vips.push(a);
                    break;
                }
            }
        }
        if pools_asked && vips.is_empty() {
            return Err(NotifyType::InternalAddressFailure);
        }
        Ok(vips)
    }

    /// The DNS servers of our pools, each once.
    pub(in crate::ike::sa) fn pool_dns(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for d in self.cfg.pools.iter().flat_map(|p| p.dns().iter()) {
            if !out.contains(d) {
                out.push(*d);
            }
        }
        out
    }

    pub(in crate::ike::sa) fn nonce(&self) -> Result<Vec<u8>, FailReason> {
        Ok(self.random::<NONCE_LEN>()?.to_vec())
    }

    pub(in crate::ike::sa) fn ike_spi(&self) -> Result<u64, FailReason> {
        loop {
            let spi = u64::from_be_bytes(self.random()?);
            if spi != 0 {
                return Ok(spi);
            }
        }
    }

    pub(in crate::ike::sa) fn esp_spi(&self) -> Result<u32, FailReason> {
        loop {
            let spi = u32::from_be_bytes(self.random()?);
            if spi >= 256 {
                return Ok(spi);
            }
        }
    }

    /// Ends the SA: timers off, a `Failed` event, a dead state keeping `last_response`.
    pub(in crate::ike::sa) fn fail(
        &mut self,
        reason: FailReason,
        spis: Option<(u64, u64)>,
        last_response: Option<(u32, Vec<u8>)>,
    ) -> State {
        self.retransmit = None;
        self.timers.clear();
        self.events.push_back(Event::Failed(reason));
        State::Dead(Dead {
            spis,
            last_response,
        })
    }

    /// An unencrypted IKE_SA_INIT response carrying one notify, to `header`'s request.
    pub(in crate::ike::sa) fn refuse_init(&mut self, request: &Header, n: NotifyPayload) {
        let msg = Message {
            header: Header {
                spi_i: request.spi_i,
                spi_r: 0,
                minor_version: 0,
                exchange_type: ExchangeType::IkeSaInit,
                flags: Flags::RESPONSE,
                message_id: request.message_id,
            },
            payloads: vec![Payload::Notify(n)],
        };
        self.stats.refused_init += 1;
        self.send(msg.to_bytes());
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.release_leases();
    }
}

impl Ctx {
    pub(in crate::ike::sa) fn new(cfg: IkeConfig, local: SocketAddr, remote: SocketAddr) -> Ctx {
        let mif = MifState::new(cfg.mif, cfg.mif_max_interfaces, cfg.mif_max_paths);
        Ctx {
            cfg,
            rng: SystemRandom::new(),
            paths: PathSet::new(local, remote),
            roam: Roam::default(),
            mif,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            retransmit: None,
            next_channel: 0,
            timers: TimerTable::default(),
            stats: Stats::default(),
            children: Vec::new(),
            original_initiator: false,
            leases: Vec::new(),
            peer_clone: false,
            family: Arc::new(()),
            clones: Vec::new(),
            cloned_from: None,
            mif_ops: Default::default(),
            #[cfg(test)]
            rekey_log: Vec::new(),
            #[cfg(test)]
            test_cp_extra: Vec::new(),
            #[cfg(test)]
            test_auth_extra: Vec::new(),
            #[cfg(test)]
            test_eap_out: None,
            #[cfg(fuzzing)]
            fuzz_eap: Vec::new(),
        }
    }
}

impl Ctx {
    /// RFC 7791: whether one more clone stays within [`MAX_CLONE_FAMILY`].
    pub(in crate::ike::sa) fn may_clone(&self) -> bool {
        Arc::strong_count(&self.family) < MAX_CLONE_FAMILY
    }

    /// The context of a clone of this IKE SA (RFC 7791): the same configuration, roles,
    /// addresses, MOBIKE and NAT state and address lists; its own queues, timers, counters;
    /// no child SAs and no leases (the virtual IPs stay the original's).
    pub(in crate::ike::sa) fn for_clone(&self, from: (u64, u64)) -> Ctx {
        let mut c = Ctx::new(self.cfg.clone(), self.paths.local(), self.paths.remote());
        c.paths = self.paths.for_clone();
        c.roam = Roam {
            local: self.roam.local.clone(),
            announced: self.roam.announced.clone(),
            refused: self.roam.refused.clone(),
            ..Roam::default()
        };
        c.original_initiator = self.original_initiator;
        c.peer_clone = self.peer_clone;
        // The multi-interface extension's state is the IKE SA's (PROTOCOL.md 2, 3.2, 4.2).
        c.mif = self.mif.clone();
        c.mif_ops = self.mif_ops.clone();
        c.family = Arc::clone(&self.family);
        c.cloned_from = Some(from);
        c
    }
}
