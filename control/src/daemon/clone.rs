//! RFC 7791 in the daemon: the flow of the KEEP_OLD_IKE_SA draft's appendix B. `mifsec ctl
//! clone CONN [--local A] [--remote A] [--child NAME]` clones CONN's first IKE SA (one
//! CREATE_CHILD_SA exchange, no authentication), moves the clone with MOBIKE
//! (UPDATE_SA_ADDRESSES) to the address pair given, then negotiates the child NAME on the
//! clone (CREATE_CHILD_SA), so that each IKE SA has its own children. With
//! `clone_per_interface = true` the same happens by itself once the connection's first
//! IKE SA is up: one clone per other usable local address, each moved there, each with
//! the connection's `clone_children` (children negotiated on clones only).
//!
//! The first IKE SA and its children are not touched. A clone is an IKE SA of its own in
//! the endpoint ([`Endpoint::cloned_from`](crate::ike::endpoint::Endpoint::cloned_from)
//! names its origin, `status` shows it): its own lifetimes, rekeys, DPD and moves.

use std::net::IpAddr;
use std::time::Instant;

use tracing::{info, warn};

use super::ike_thread::IkeThread;
use crate::ike::IkeSaInfo;
use crate::ike::endpoint::SaHandle;
use crate::logging::ike_span;

/// What follows once a clone we asked for is up.
#[derive(Debug, Clone)]
pub(super) struct ClonePlan {
    /// The IKE SA cloned.
    pub(super) from: SaHandle,
    /// Move the clone to our address...
    pub(super) local: Option<IpAddr>,
    /// ... and the peer's (default: its current one).
    pub(super) remote: Option<IpAddr>,
    /// Then negotiate these children on it.
    pub(super) children: Vec<String>,
}

/// The most clones waiting to come up (commands beyond are refused).
const MAX_PLANS: usize = 32;

impl IkeThread {
    /// `ctl clone`: clones `conn`'s first established IKE SA (not itself a clone), to be
    /// moved to `local` / `remote` and given child `child`. The answer for the operator;
    /// the rest happens asynchronously (the log and `status` show it).
    pub(super) fn clone_cmd(
        &mut self,
        now: Instant,
        conn: &str,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
        child: Option<String>,
    ) -> Result<String, String> {
        let Some(c) = self.conns.iter().position(|x| x.name == conn) else {
            return Err(format!("no connection named {conn:?}"));
        };
        if let Some(ch) = &child {
            if !self.conns[c].children.iter().any(|n| n == ch) {
                return Err(format!(
                    "{conn} has no child named {ch:?} (its children: {})",
                    self.conns[c].children.join(", ")
                ));
            }
        }
        let origin = self.ep.handles().into_iter().find(|&h| {
            self.ep.connection_of(h) == Some(c)
                && self.ep.cloned_from(h).is_none()
                && self.ep.sa(h).is_some_and(|s| s.is_established())
        });
        let Some(from) = origin else {
            return Err(format!("{conn} has no established IKE SA to clone"));
        };
        let r = self.start_clone(
            now,
            from,
            ClonePlan {
                from,
                local,
                remote,
                children: child.iter().cloned().collect(),
            },
        );
        self.pump();
        self.next_timer = self.ep.poll_timeout();
        self.touched();
        r?;
        let mut msg = format!("IKE SA #{} of {conn}: cloning (RFC 7791)", from.0);
        if let Some(l) = local {
            msg += &format!(", then moving the clone to {l}");
            if let Some(r) = remote {
                msg += &format!(" === {r}");
            }
        }
        if let Some(ch) = child {
            msg += &format!(", then child {ch} on it");
        }
        Ok(msg)
    }

    /// Asks IKE SA `from` for a clone and remembers what follows.
    fn start_clone(&mut self, now: Instant, from: SaHandle, plan: ClonePlan) -> Result<(), String> {
        if self.clone_plans.len() >= MAX_PLANS {
            return Err("too many clones under way; try again".into());
        }
        if let (Some(l), Some(r)) = (plan.local, plan.remote) {
            if l.is_ipv4() != r.is_ipv4() {
                return Err("--local and --remote are of different families".into());
            }
        }
        let conn = self
            .ep
            .connection_of(from)
            .map_or("?", |c| self.conns[c].name.as_str())
            .to_owned();
        let _span = ike_span(&conn, from.0).entered();
        match self.ep.clone_sa(now, from) {
            Ok(()) => {
                info!("cloning the IKE SA (RFC 7791)");
                self.clone_plans.push(plan);
                Ok(())
            }
            Err(e) => {
                info!("clone refused: {e}");
                Err(format!("IKE SA #{} of {conn}: {e}", from.0))
            }
        }
    }

    /// A clone `h` came up (our request if `info.initiator`): carries out its plan: the
    /// move first, the child once the move is done (or at once without a move).
    pub(super) fn on_cloned(&mut self, h: SaHandle, info: &IkeSaInfo) {
        let Some(from) = self.ep.cloned_from(h) else {
            return;
        };
        if !info.initiator {
            info!("cloned by the peer from IKE SA #{}", from.0);
            return;
        }
        let Some(i) = self.clone_plans.iter().position(|p| p.from == from) else {
            return;
        };
        let plan = self.clone_plans.remove(i);
        let now = Instant::now();
        if let Some(local) = plan.local {
            match self.ep.request_move(now, h, local, plan.remote) {
                Ok(true) => {
                    info!("moving the clone to {local} (MOBIKE)");
                    self.entry(h).after_move = plan.children;
                    return;
                }
                Ok(false) => info!("the clone is on {local} already"),
                Err(e) => warn!("moving the clone to {local} refused: {e}"),
            }
        }
        for child in plan.children {
            self.clone_child(now, h, &child);
        }
    }

    /// IKE SA `h` moved: a clone's planned child follows now.
    pub(super) fn clone_moved(&mut self, h: SaHandle) {
        for child in std::mem::take(&mut self.entry(h).after_move) {
            self.clone_child(Instant::now(), h, &child);
        }
    }

    fn clone_child(&mut self, now: Instant, h: SaHandle, child: &str) {
        let started = self
            .ep
            .sa_mut(h)
            .is_some_and(|sa| sa.create_child(now, child));
        if started {
            info!("negotiating child {child} on the clone");
        } else {
            warn!("child {child} could not be started on the clone");
        }
    }

    /// `clone_per_interface`: IKE SA `h` (the connection's first, ours) is up: one clone
    /// per other usable local address of its family, each moved there.
    pub(super) fn clone_per_interface(&mut self, h: SaHandle) {
        let Some(c) = self.ep.connection_of(h) else {
            return;
        };
        let conn = &self.conns[c];
        if !conn.clone_per_interface || self.ep.cloned_from(h).is_some() {
            return;
        }
        let Some(sa) = self.ep.sa(h).filter(|s| s.is_initiator()) else {
            return;
        };
        let children = conn.ike.clone_children.clone();
        let (local, _) = sa.addresses();
        let others: Vec<IpAddr> = sa
            .local_addresses()
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|a| *a != local.ip() && a.is_ipv4() == local.is_ipv4())
            .collect();
        let now = Instant::now();
        for a in others {
            let plan = ClonePlan {
                from: h,
                local: Some(a),
                remote: None,
                children: children.clone(),
            };
            if let Err(e) = self.start_clone(now, h, plan) {
                warn!("clone_per_interface: {e}");
                break;
            }
        }
    }

    /// Forgets the plans of IKE SA `h` (gone).
    pub(super) fn forget_clone_plans(&mut self, h: SaHandle) {
        self.clone_plans.retain(|p| p.from != h);
    }
}
