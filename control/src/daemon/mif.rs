//! The daemon's side of the multi-interface extension (docs/PROTOCOL.md): `ctl mif`
//! operations handed to the IKE SAs and their answers handed back to the operator.

use std::time::Instant;

use crossbeam_channel::Sender;

use super::ike_thread::IkeThread;
use crate::ctl::mif::{MifAnswer, MifCommand};

impl IkeThread {
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
        let _ = (now, conn, cmd);
        // No IKE SA has the extension in use yet.
        let _ = reply.try_send(Vec::new());
    }
}
