//! mifsec's test kit: what the integration tests of every crate (dataplane/tests, tests/,
//! control/tests) and the lab scripts (scripts/bench_ike.py, scripts/bench_flood.py) share.
//!
//! - [`require_root`]: a root test fails without root, never passes silently; with
//!   `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` it is built ignored
//!   (`#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]`).
//! - [`wait_until`] and [`poll`]: waiting on a condition with a deadline, never a bare sleep.
//! - [`ip`], [`exec_in`], [`run`]: running `ip` and commands inside a namespace.
//! - [`Netns`], [`veth`], [`in_ns`]: network namespaces deleted on drop, veth pairs, threads
//!   inside a namespace.
//! - [`start_daemon`], [`mifsec_ctl`], [`mifsec_status`], [`terminate`]: `mifsec run`
//!   daemons in a namespace and the CLI against their control sockets.
//! - [`swan`]: charon (through scripts/swan.sh) and the two-namespace interop lab.
//! - [`link`]: a link through a middle router (veth, addresses, source routing, counters,
//!   a silent blackhole), shared by the roaming and multi-interface labs.
//! - [`roam`]: the roaming lab (client with two links, a middle router that blackholes
//!   silently, a gateway with two addresses) and a 100/s ping stream's losses and gaps.
//! - [`mif`]: the multi-interface lab (two mifsec peers, two links per side, every address
//!   pair a path through a middle router, shaping, silent blackholes, N child SAs).
//! - [`capture`]: tcpdump in a namespace, tshark's list of the IKE messages captured, and
//!   counts of requests and responses per exchange type between two instants.
//! - [`stream`]: a sequence-numbered UDP stream over many destinations (one per child SA)
//!   counting lost, duplicated and reordered packets and the longest gap; also the
//!   `mif-stream` binary.
//! - [`template`]: the configuration templates in testkit/templates/, which the Python
//!   scripts read too (testkit/python/mifsec_testkit.py).

pub mod capture;
mod cmd;
mod daemon;
mod follow;
pub mod link;
pub mod mif;
mod netns;
pub mod roam;
mod root;
pub mod stream;
pub mod swan;
pub mod template;
mod wait;

pub use cmd::{exec_in, ip, run, text};
pub use daemon::{mifsec_ctl, mifsec_status, start_daemon, stop, terminate};
pub use follow::Follower;
pub use netns::{Netns, addr_up, enter, in_ns, unique_suffix, veth};
pub use root::require_root;
pub use wait::{WAIT, poll, wait_until};
