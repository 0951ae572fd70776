//! The daemon's side of the multi-interface extension (docs/PROTOCOL.md):
//!
//! * our interfaces to the IKE SAs ([`IkeThread::local_interfaces`]: every usable engine
//!   interface with its section's `priority` and `alternate`, handed to
//!   `Endpoint::set_local_interfaces` at start and on every change);
//! * child SAs over their MIF paths (`ChildSa::mif`): one engine path per [`MifPath`], named
//!   as it (`i1r2`), on the engine interface that has the path's local address, verified by
//!   a probe before it carries traffic ([`IkeThread::mif_specs`], used by `install`);
//! * `Event::MifApplied`: every child of the event goes from its installed paths to its new
//!   list ([`plan_paths`](super::install::plan_paths)), all of them in ONE `Engine::apply`
//!   (one table swap); a soft handover's old paths leave once a new one answered a probe:
//!   the engine does that (`TableOp::RemoveWhenUp` in the same batch, completed by its
//!   monitor, every child that is ready in one more swap) and tells us with
//!   `Event::SoftMoveEnded` ([`IkeThread::mif_soft_ended`]);
//! * `ctl mif`: the operation resolved to our interface IDs and handed to each IKE SA of the
//!   connection with the extension in use, the peer's answers handed back to the operator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tracing::{info, warn};

use super::ike_thread::IkeThread;
use super::install::{PathMove, PathPlan, SoftWait, plan_paths, ts_prefixes};
use crate::config::Config;
use crate::ctl::mif::{MIF_ANSWER, MifAction, MifAnswer, MifChildAnswer, MifCommand, MifSelect};
use crate::dataplane::engine::{PathSpec, TableOp};
use crate::dataplane::sa_table::{Policy, Prefix, Role};
use crate::ike::config::ts_prefix;
use crate::ike::endpoint::SaHandle;
use crate::ike::sa::{LocalInterface, MifPath};
use crate::wire::{
    MifOp, MifOperation, MifRefusal, MifResult, MifRole, MifSelection, MifStatus, TrafficSelector,
};

/// How long the engine waits for one of a soft handover's new paths to answer. If none
/// does, the old paths stay (never break before make): the child keeps them, beside the
/// new ones, until a later change of its list takes them out.
pub(super) const SOFT_GIVE_UP: Duration = Duration::from_secs(5);
/// After the engine's wait, how long we wait for its `Event::SoftMoveEnded` before we read
/// the child's paths from the engine instead (the event can only be lost if the event
/// channel was full).
pub(super) const SOFT_EVENT_GRACE: Duration = Duration::from_secs(1);
/// The reorder buffer of a child whose peer aggregates (as `reorder_ms`'s default).
pub(super) const MIF_REORDER: Duration = Duration::from_millis(50);

/// What the daemon keeps of a child SA installed over MIF paths.
#[derive(Debug, Clone)]
pub(super) struct MifTrack {
    /// Our outbound policy.
    pub policy: Policy,
    /// A reorder buffer on its inbound packets.
    pub reorder: bool,
    /// Its paths as both peers computed them (the last list).
    pub paths: Vec<MifPath>,
    /// A soft handover whose wait the engine runs, and when to look at the engine's paths
    /// if its `Event::SoftMoveEnded` has not come by then.
    pub soft: Option<(SoftWait, Instant)>,
    /// Path state changes the engine reported.
    pub path_events: u64,
}

/// One child of an `Event::MifApplied`: its new full path list and how to get there.
#[derive(Debug, Clone)]
pub(super) struct PathsChange {
    /// Our inbound SPI.
    pub spi_in: u32,
    /// The new list.
    pub paths: Vec<MifPath>,
    /// Set, soft or hard.
    pub how: PathMove,
    /// Transport mode: its new selectors (ours, the peer's), when they changed.
    pub selectors: Option<(Vec<TrafficSelector>, Vec<TrafficSelector>)>,
}

/// A `ctl mif` waiting for the peers' answers.
pub(super) struct MifReply {
    conn: String,
    reply: Sender<Vec<MifAnswer>>,
    deadline: Instant,
    /// One per IKE SA asked: the handle, what was asked, and the answer once it came.
    answers: Vec<(SaHandle, MifOp, MifAnswer)>,
    /// The IKE SAs the operation could not be sent on (why, in `refused`).
    not_sent: Vec<MifAnswer>,
}

impl MifReply {
    fn send(self) {
        let mut all: Vec<MifAnswer> = self.answers.into_iter().map(|(_, _, a)| a).collect();
        all.extend(self.not_sent);
        all.sort_by_key(|a| a.ike_sa);
        let _ = self.reply.try_send(all);
    }
}

/// The name `status` and `ctl mif` give a per-child status.
pub fn status_name(s: MifStatus) -> &'static str {
    match s {
        MifStatus::Applied => "applied",
        MifStatus::NotAllowed => "not-allowed",
        MifStatus::OutsideSpd => "outside-spd",
        MifStatus::UnknownSa => "unknown-sa",
        MifStatus::AddressFamily => "address-family",
        MifStatus::Limit => "limit",
        MifStatus::NoChange => "no-change",
        MifStatus::LastPath => "last-path",
    }
}

/// The name of a refusal of a whole operation.
pub fn refusal_name(r: MifRefusal) -> &'static str {
    match r {
        MifRefusal::Malformed => "malformed",
        MifRefusal::UnknownOperation => "unknown-operation",
        MifRefusal::UnknownInterface => "unknown-interface",
        MifRefusal::Limit => "limit",
        MifRefusal::NotNegotiated => "not-negotiated",
    }
}

fn child_answers(results: &[MifResult]) -> Vec<MifChildAnswer> {
    results
        .iter()
        .map(|r| MifChildAnswer {
            spi: format!("{:08x}", r.spi),
            status: status_name(r.status).into(),
            paths: r.paths,
        })
        .collect()
}

impl IkeThread {
    /// Our usable interfaces as the IKE SAs announce them: every engine interface with an
    /// address and a port, in the engine's order, with its section's preferences.
    pub(super) fn local_interfaces(&self) -> Vec<LocalInterface> {
        let mut v: Vec<LocalInterface> = Vec::new();
        for i in &self.ifaces {
            if i.port == 0 || i.address.is_unspecified() {
                continue;
            }
            if v.iter().any(|l| l.addr == i.address && l.port == i.port) {
                continue;
            }
            let p = Config::prefs_of(&self.prefs, &i.name);
            v.push(LocalInterface {
                name: i.name.clone(),
                addr: i.address,
                port: i.port,
                priority: p.priority,
                alternate: p.alternate,
            });
        }
        v
    }

    /// Gives every IKE SA (and the new ones) our interfaces.
    pub(super) fn announce_interfaces(&mut self, now: Instant, list: &[LocalInterface]) {
        self.ep.set_local_interfaces(now, list);
        self.touched();
    }

    /// The engine interface that has our end of a path.
    fn engine_interface(&self, local: SocketAddr) -> Option<String> {
        self.ifaces
            .iter()
            .find(|f| f.address == local.ip() && f.port == local.port())
            .or_else(|| self.ifaces.iter().find(|f| f.address == local.ip()))
            .map(|f| f.name.clone())
    }

    /// One engine path per MIF path, named as it, on the engine interface with its local
    /// address, verified before use; a path whose local address has no socket (any more)
    /// is left out, and logged.
    pub(super) fn mif_specs(&self, paths: &[MifPath]) -> Vec<PathSpec> {
        paths
            .iter()
            .filter_map(|p| {
                let Some(interface) = self.engine_interface(p.local) else {
                    warn!(
                        "MIF path {} ({} -> {}): no interface has {}; left out",
                        p.name, p.local, p.remote, p.local
                    );
                    return None;
                };
                Some(PathSpec {
                    name: p.name.clone(),
                    interface,
                    remote: p.remote,
                    role: if p.role == Role::Active {
                        Role::Active
                    } else {
                        Role::Standby
                    },
                    weight: 1,
                    pin: Vec::new(),
                    verify: true,
                })
            })
            .collect()
    }

    /// `Event::MifApplied`: every child of the event to its new paths, in one table swap.
    /// A batch the engine refuses (all or nothing) is tried again child by child, so that
    /// one child's failure does not hold the others back.
    pub(super) fn mif_apply(&mut self, h: SaHandle, children: &[PathsChange]) {
        let now = Instant::now();
        // A soft handover's wait may have ended in the engine with its event still on the
        // way: plan from the paths the engine has.
        for spi in children.iter().map(|c| c.spi_in) {
            self.mif_sync_soft(h, spi);
        }
        type Sel = Option<(Vec<Prefix>, Vec<Prefix>)>;
        let mut plans: Vec<(u32, PathPlan, Vec<MifPath>, Sel)> = Vec::new();
        for ch in children {
            let specs = self.mif_specs(&ch.paths);
            let Some(c) = self
                .entries
                .get(&h)
                .and_then(|e| e.children.iter().find(|c| c.spec.spi_in == ch.spi_in))
            else {
                warn!("MIF: no installed child SA {:08x}", ch.spi_in);
                continue;
            };
            let mut plan = plan_paths(&c.spec.name, &c.spec.paths, &specs, ch.how);
            if let Some(w) = &plan.soft {
                // Make before break, the second half in the engine.
                plan.ops.push(TableOp::RemoveWhenUp {
                    sa: c.spec.name.clone(),
                    remove: w.remove.clone(),
                    wait_for: w.wait_for.clone(),
                    within: SOFT_GIVE_UP,
                });
            }
            let selectors = ch.selectors.as_ref().map(|(l, r)| {
                let pre = |ts: &[TrafficSelector]| -> Vec<Prefix> {
                    ts.iter().flat_map(ts_prefixes).collect()
                };
                (pre(l), pre(r))
            });
            if let Some((l, r)) = &selectors {
                // Transport mode: the selectors move with the paths, in the same swap.
                plan.ops.push(TableOp::SetSelectors {
                    sa: c.spec.name.clone(),
                    local_ts: l.clone(),
                    remote_ts: r.clone(),
                });
            }
            plans.push((ch.spi_in, plan, ch.paths.clone(), selectors));
        }
        let ops: Vec<TableOp> = plans
            .iter()
            .flat_map(|(_, p, _, _)| p.ops.clone())
            .collect();
        let ok: Vec<bool> = if ops.is_empty() {
            vec![true; plans.len()]
        } else {
            match self.engine.apply(ops) {
                Ok(_) => vec![true; plans.len()],
                Err(e) => {
                    warn!("MIF: the engine refused the batch ({e}); child by child");
                    plans
                        .iter()
                        .map(|(_, p, _, _)| {
                            p.ops.is_empty()
                                || self
                                    .engine
                                    .apply(p.ops.clone())
                                    .inspect_err(|e| warn!("MIF: {e}"))
                                    .is_ok()
                        })
                        .collect()
                }
            }
        };
        let mut applied = 0;
        for ((spi, plan, paths, selectors), ok) in plans.into_iter().zip(ok) {
            if !ok {
                continue;
            }
            let Some(c) = self
                .entries
                .get_mut(&h)
                .and_then(|e| e.children.iter_mut().find(|c| c.spec.spi_in == spi))
            else {
                continue;
            };
            applied += 1;
            // What the engine has now: the new list, then a soft move's paths that wait.
            let mut now_paths = plan.result.clone();
            if let Some(w) = &plan.soft {
                now_paths.extend(
                    c.spec
                        .paths
                        .iter()
                        .filter(|p| w.remove.contains(&p.name))
                        .cloned(),
                );
            }
            c.spec.paths = now_paths;
            if let Some((l, r)) = selectors {
                c.status.local_ts = l.iter().map(ToString::to_string).collect();
                c.status.remote_ts = r.iter().map(ToString::to_string).collect();
                c.spec.local_ts = l;
                c.spec.remote_ts = r;
            }
            c.paths = c.spec.paths.iter().map(|p| p.name.clone()).collect();
            let track = c.mif.get_or_insert_with(|| MifTrack {
                policy: Policy::Failover,
                reorder: false,
                paths: Vec::new(),
                soft: None,
                path_events: 0,
            });
            track.paths = paths;
            track.soft = plan
                .soft
                .map(|w| (w, now + SOFT_GIVE_UP + SOFT_EVENT_GRACE));
            let names: Vec<&str> = plan.result.iter().map(|p| p.name.as_str()).collect();
            info!(
                "child SA {}: MIF paths now [{}]{}",
                c.spec.name,
                names.join(" "),
                if track.soft.is_some() {
                    " (the old ones leave once a new one answers)"
                } else {
                    ""
                }
            );
        }
        info!(
            "MIF: {applied} of {} child SAs changed in one table swap",
            children.len()
        );
        self.dirty = true;
    }

    /// The engine's `PathState` of a path of child `spi_in`: counted. Returns whether the
    /// status changed.
    pub(super) fn mif_path_state(&mut self, spi_in: u32) -> bool {
        let Some(m) = self
            .entries
            .values_mut()
            .flat_map(|e| e.children.iter_mut())
            .find(|c| c.spec.spi_in == spi_in)
            .and_then(|c| c.mif.as_mut())
        else {
            return false;
        };
        m.path_events += 1;
        true
    }

    /// `Event::SoftMoveEnded` of child `spi_in`: the engine's wait for one of its new paths
    /// ended, with `up` answering and `paths` removed, or (`up` is `None`) with none of them
    /// answering in time and `paths` kept. The child's soft handover is over if that was its
    /// wait (a later operation of ours may have replaced it: then the engine replaced the
    /// wait too, and this event is of the one before). Returns whether the status changed.
    pub(super) fn mif_soft_ended(
        &mut self,
        spi_in: u32,
        up: Option<&str>,
        paths: &[String],
    ) -> bool {
        let engine = std::sync::Arc::clone(&self.engine);
        let Some(c) = self
            .entries
            .values_mut()
            .flat_map(|e| e.children.iter_mut())
            .find(|c| c.spec.spi_in == spi_in)
        else {
            return false;
        };
        if up.is_some() {
            // What left the engine leaves our record (unless added again since).
            let now = engine.path_names(&c.spec.name).unwrap_or_default();
            let gone = |n: &String| paths.contains(n) && !now.contains(n);
            c.spec.paths.retain(|p| !gone(&p.name));
            c.paths.retain(|p| !gone(p));
        }
        let Some(m) = c.mif.as_mut() else {
            return true;
        };
        if m.soft.as_ref().is_some_and(|(w, _)| w.remove == paths) {
            m.soft = None;
            match up {
                Some(up) => info!(
                    "child SA {}: soft handover done: {up} answers, [{}] removed",
                    c.spec.name,
                    paths.join(" ")
                ),
                None => warn!(
                    "child SA {}: soft handover: no new path answered within {} s; [{}] stay",
                    c.spec.name,
                    SOFT_GIVE_UP.as_secs(),
                    paths.join(" ")
                ),
            }
        }
        true
    }

    /// Child `spi_in` of IKE SA `h` as the engine has it, for a soft handover whose end we
    /// may not have heard of: the old paths the engine no longer has leave our record too,
    /// and when none of them is left the handover is over. Cheap: the engine's published
    /// table, no status.
    fn mif_sync_soft(&mut self, h: SaHandle, spi_in: u32) {
        let Some(c) = self
            .entries
            .get_mut(&h)
            .and_then(|e| e.children.iter_mut().find(|c| c.spec.spi_in == spi_in))
        else {
            return;
        };
        let Some((w, _)) = c.mif.as_ref().and_then(|m| m.soft.as_ref()) else {
            return;
        };
        let Some(names) = self.engine.path_names(&c.spec.name) else {
            return;
        };
        let gone: Vec<String> = w
            .remove
            .iter()
            .filter(|r| !names.contains(r))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        c.spec.paths.retain(|p| !gone.contains(&p.name));
        c.paths.retain(|p| !gone.contains(p));
        if gone.len() == w.remove.len()
            && let Some(m) = c.mif.as_mut()
        {
            m.soft = None;
            info!(
                "child SA {}: soft handover done, [{}] removed",
                c.spec.name,
                gone.join(" ")
            );
        }
        self.dirty = true;
    }

    /// When [`IkeThread::mif_tick`] is due: a `ctl mif` deadline, or a soft handover whose
    /// engine event is late.
    pub(super) fn mif_due(&self) -> Option<Instant> {
        let soft = self
            .entries
            .values()
            .flat_map(|e| &e.children)
            .filter_map(|c| c.mif.as_ref().and_then(|m| m.soft.as_ref()).map(|s| s.1))
            .min();
        let reply = self.mif_replies.iter().map(|r| r.deadline).min();
        match (soft, reply) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Answers the `ctl mif` requests whose deadline passed. A soft handover whose engine
    /// wait should have ended a while ago without its event reaching us: read from the
    /// engine's paths what became of it ([`IkeThread::mif_sync_soft`]); if the old paths are
    /// still there the wait ended without a new path (they stay), and the handover is over.
    pub(super) fn mif_tick(&mut self, now: Instant) {
        self.mif_answer_late(now);
        let late: Vec<(SaHandle, u32)> = self
            .entries
            .iter()
            .flat_map(|(h, e)| e.children.iter().map(move |c| (*h, c)))
            .filter(|(_, c)| {
                c.mif
                    .as_ref()
                    .and_then(|m| m.soft.as_ref())
                    .is_some_and(|s| s.1 <= now)
            })
            .map(|(h, c)| (h, c.spec.spi_in))
            .collect();
        for (h, spi) in late {
            self.mif_sync_soft(h, spi);
            if let Some(c) = self
                .entries
                .get_mut(&h)
                .and_then(|e| e.children.iter_mut().find(|c| c.spec.spi_in == spi))
                && let Some(m) = c.mif.as_mut()
                && m.soft.take().is_some()
            {
                warn!(
                    "child SA {}: soft handover: the engine's wait is over and its old paths stay",
                    c.spec.name
                );
                self.dirty = true;
            }
        }
    }

    /// `ctl mif CONN ...`: the operation goes to every established IKE SA of `conn` with the
    /// extension in use; the answers go back on `reply` once every peer answered or the
    /// deadline passed.
    pub(super) fn mif_command(
        &mut self,
        now: Instant,
        conn: &str,
        cmd: MifCommand,
        reply: Sender<Vec<MifAnswer>>,
    ) {
        let mut answers = Vec::new();
        let mut immediate = Vec::new();
        for h in self.ep.handles() {
            let Some(ci) = self.ep.connection_of(h) else {
                continue;
            };
            if self.conns[ci].name != conn {
                continue;
            }
            let Some(sa) = self.ep.sa(h) else { continue };
            if !sa.is_established() {
                continue;
            }
            let Some(info) = sa.mif_info().filter(|i| i.in_use) else {
                continue;
            };
            let answer = |refused: Option<String>| MifAnswer {
                ike_sa: h.0,
                op: cmd.action.name().into(),
                dry_run: cmd.dry_run,
                answered: false,
                refused,
                children: Vec::new(),
            };
            let id_of = |name: &str| -> Result<u16, String> {
                info.ours
                    .iter()
                    .find(|i| i.name == name)
                    .map(|i| i.id)
                    .ok_or_else(|| {
                        format!("{name} is none of the interfaces announced to the peer")
                    })
            };
            let op = (|| -> Result<MifOp, String> {
                Ok(match &cmd.action {
                    MifAction::Add { iface, standby } => MifOp::AddInterface {
                        id: id_of(iface)?,
                        role: if *standby {
                            MifRole::Standby
                        } else {
                            MifRole::Active
                        },
                    },
                    MifAction::Remove { iface } => MifOp::RemoveInterface { id: id_of(iface)? },
                    MifAction::SoftHandover { from, to } => MifOp::SoftHandover {
                        from: id_of(from)?,
                        to: id_of(to)?,
                    },
                    MifAction::HardHandover { from, to } => MifOp::HardHandover {
                        from: id_of(from)?,
                        to: id_of(to)?,
                    },
                    MifAction::Alternates { ifaces } => MifOp::SetAlternates {
                        ids: ifaces.iter().map(|i| id_of(i)).collect::<Result<_, _>>()?,
                    },
                    MifAction::Check { iface } => MifOp::Check { id: id_of(iface)? },
                })
            })();
            let op = match op {
                Ok(op) => op,
                Err(why) => {
                    immediate.push(answer(Some(why)));
                    continue;
                }
            };
            let selection = match &cmd.select {
                MifSelect::All => MifSelection::All,
                MifSelect::Spis(s) => MifSelection::Spis(s.clone()),
                MifSelect::Ts { local, remote } => MifSelection::Ts {
                    sender: local.iter().map(|p| ts_prefix(p.addr, p.len)).collect(),
                    receiver: remote.iter().map(|p| ts_prefix(p.addr, p.len)).collect(),
                },
            };
            // An operation that takes away the interface the IKE SA is on (REMOVE, or a
            // handover's From) moves the IKE SA too (PROTOCOL 5.1 MOVE_IKE): the request goes
            // out from the interface handed over to (or another active one), so it is
            // answered even when the From interface can no longer send (its address gone).
            let ike_local = sa.addresses().0.ip();
            let leaving = match &op {
                MifOp::RemoveInterface { id }
                | MifOp::SoftHandover { from: id, .. }
                | MifOp::HardHandover { from: id, .. } => Some(*id),
                _ => None,
            };
            let move_ike = !cmd.dry_run
                && leaving.is_some_and(|id| {
                    info.ours
                        .iter()
                        .any(|i| i.id == id && i.addr.ip() == ike_local)
                });
            let operation = MifOperation {
                op: op.clone(),
                dry_run: cmd.dry_run,
                move_ike,
                selection,
            };
            match self.mif_send(now, h, operation) {
                Ok(()) => answers.push((h, op, answer(None))),
                Err(e) => immediate.push(answer(Some(e))),
            }
        }
        self.touched();
        if answers.is_empty() {
            let _ = reply.try_send(immediate);
            return;
        }
        // Those refused here are answered with the others.
        self.mif_replies.push(MifReply {
            conn: conn.to_owned(),
            reply,
            deadline: now + MIF_ANSWER,
            answers,
            not_sent: immediate,
        });
    }

    /// Hands an operation to IKE SA `h` (queued behind any of ours outstanding).
    fn mif_send(&mut self, now: Instant, h: SaHandle, op: MifOperation) -> Result<(), String> {
        self.ep.mif_request(now, h, op).map_err(|e| e.to_string())
    }

    /// The peer answered an operation of ours (applied, dry run, or refused): the `ctl mif`
    /// waiting for it, if any, gets the answer.
    pub(super) fn mif_answered(
        &mut self,
        h: SaHandle,
        op: &MifOp,
        dry_run: Option<bool>,
        results: &[MifResult],
        refused: Option<MifRefusal>,
    ) {
        let Some(ri) = self.mif_replies.iter().position(|r| {
            r.answers.iter().any(|(rh, rop, a)| {
                *rh == h && rop == op && dry_run.is_none_or(|d| a.dry_run == d) && !a.answered
            })
        }) else {
            return;
        };
        let r = &mut self.mif_replies[ri];
        if let Some((_, _, a)) = r.answers.iter_mut().find(|(rh, rop, a)| {
            *rh == h && rop == op && dry_run.is_none_or(|d| a.dry_run == d) && !a.answered
        }) {
            a.answered = true;
            a.refused = refused.map(|x| refusal_name(x).to_owned());
            a.children = child_answers(results);
        }
        if r.answers.iter().all(|(_, _, a)| a.answered) {
            let r = self.mif_replies.remove(ri);
            info!("ctl mif {}: answered", r.conn);
            self.mif_reply_after_publish(r);
        }
    }

    /// Answers the `ctl mif` requests whose deadline passed with what came.
    fn mif_answer_late(&mut self, now: Instant) {
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.mif_replies)
            .into_iter()
            .partition(|r| r.deadline <= now);
        self.mif_replies = keep;
        for r in late {
            warn!(
                "ctl mif {}: no answer within {} s",
                r.conn,
                MIF_ANSWER.as_secs()
            );
            self.mif_reply_after_publish(r);
        }
    }

    /// Answers `r` once the status shows what the answer says: right after the next
    /// publication of the IKE SAs' status, which comes at the end of this turn (so that a
    /// `status` that follows `ctl mif` sees the paths and counters of the answer).
    fn mif_reply_after_publish(&mut self, r: MifReply) {
        self.mif_ready.push(r);
        self.dirty = true;
    }

    /// After a publication of the status: the `ctl mif` answers that waited for it.
    pub(super) fn mif_send_ready(&mut self) {
        for r in std::mem::take(&mut self.mif_ready) {
            r.send();
        }
    }
}
