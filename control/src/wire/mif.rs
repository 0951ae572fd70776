//! mifsec's multi-interface extension ("MIF"): the Notification Data of the private-use
//! notifies 52992 to 52998, byte by byte as docs/PROTOCOL.md sections 2 to 5 define them.
//!
//! ```text
//! MIF_SUPPORTED       Version | Reserved | Max Interfaces (2) | Max Paths per Child (2)
//! MIF_INTERFACE       ID (2) | Flags | Priority | Port (2) | Family | Name Length | Address | Name
//! MIF_INTERFACE_LIST  Generation (4)
//! MIF_OPERATION       Operation | Flags | Reserved (2) | Body | Selection
//! MIF_RESULT          SPI (4) | Status | Paths | Reserved (2)
//! MIF_REFUSED         Reason | Reserved (3)
//! MIF_CHILD           Policy | Flags | Interface Count (2) | Interface ID (2) x Count
//! ```
//!
//! Every type has `parse` (the exact Notification Data: lengths exact, family 4 or 6,
//! counts within the data and the limits of PROTOCOL 6.6, interface IDs non-zero, names at
//! most 32 octets, no trailing octets), `emit` and `notify` (the Notify payload carrying
//! it). A malformed MIF notify is never an IKE error: the exchange answers MIF_REFUSED
//! MALFORMED ([`MifOperation::refusal`] tells which reason a request's operation earns).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mifsec_dataplane::sa_table::Policy;

use super::WireError;
use super::codec::{Reader, put_u16, put_u32};
use super::notify::{NotifyPayload, NotifyType};
use super::payload::Payload;
use super::ts::TrafficSelector;

/// The extension version this implementation speaks.
pub const MIF_VERSION: u8 = 1;
/// The most interfaces of a peer any side keeps (and so announces), PROTOCOL 2 and 6.6.
pub const MIF_MAX_INTERFACES: u16 = 64;
/// The most paths of one child SA (the engine's aggregate schedule size), PROTOCOL 2.
pub const MIF_MAX_PATHS: u16 = 64;
/// The longest interface name, in octets (PROTOCOL 3.1).
pub const MIF_MAX_NAME: usize = 32;
/// The most SPIs in one selection (PROTOCOL 5.2).
pub const MIF_MAX_SPIS: usize = 256;
/// The most selectors on each side of a TS selection (PROTOCOL 5.2).
pub const MIF_MAX_TS: usize = 16;

/// Whether `t` is one of the extension's notify types (52992 to 52998).
pub fn is_mif_notify(t: NotifyType) -> bool {
    (52992..=52998).contains(&t.to_raw())
}

fn notify_payload(t: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(NotifyPayload::new(t, data))
}

fn nonzero_id(id: u16, what: &'static str) -> Result<u16, WireError> {
    if id == 0 {
        Err(WireError::InvalidValue { what })
    } else {
        Ok(id)
    }
}

/// Reads `count` interface IDs, each non-zero and none twice.
fn read_ids(r: &mut Reader<'_>, count: usize, what: &'static str) -> Result<Vec<u16>, WireError> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = nonzero_id(r.u16(what)?, what)?;
        if ids.contains(&id) {
            return Err(WireError::InvalidValue { what });
        }
        ids.push(id);
    }
    Ok(ids)
}

fn policy_code(p: Policy) -> u8 {
    match p {
        Policy::Failover => 0,
        Policy::Aggregate => 1,
        Policy::Redundant => 2,
        Policy::Pinned => 3,
    }
}

fn policy_from(code: u8) -> Result<Policy, WireError> {
    Ok(match code {
        0 => Policy::Failover,
        1 => Policy::Aggregate,
        2 => Policy::Redundant,
        3 => Policy::Pinned,
        _ => {
            return Err(WireError::InvalidValue {
                what: "MIF_CHILD policy",
            });
        }
    })
}

/// MIF_SUPPORTED (52992), PROTOCOL section 2: 6 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MifSupported {
    /// The extension version; only [`MIF_VERSION`] puts the extension in use.
    pub version: u8,
    /// How many interfaces of the peer the sender keeps.
    pub max_interfaces: u16,
    /// How many paths one child SA may have at the sender.
    pub max_paths: u16,
}

impl MifSupported {
    const LEN: usize = 6;

    /// Parses the Notification Data.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        if data.len() != Self::LEN {
            return Err(WireError::BadLength {
                what: "MIF_SUPPORTED",
            });
        }
        let mut r = Reader::new(data);
        let version = r.u8("MIF_SUPPORTED")?;
        r.u8("MIF_SUPPORTED")?;
        let max_interfaces = r.u16("MIF_SUPPORTED")?;
        let max_paths = r.u16("MIF_SUPPORTED")?;
        r.finish("MIF_SUPPORTED")?;
        Ok(MifSupported {
            version,
            max_interfaces,
            max_paths,
        })
    }

    /// The Notification Data.
    pub fn emit(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        b.push(self.version);
        b.push(0);
        put_u16(&mut b, self.max_interfaces);
        put_u16(&mut b, self.max_paths);
        b
    }

    /// The Notify payload carrying it.
    pub fn notify(&self) -> Payload {
        notify_payload(NotifyType::MifSupported, self.emit())
    }
}

/// MIF_INTERFACE (52993), PROTOCOL section 3.1: one interface of the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MifInterface {
    /// The sender's identifier, 1 to 65535.
    pub id: u16,
    /// Announced for use only as an alternate (flag 0x01).
    pub alternate: bool,
    /// Lower is preferred.
    pub priority: u8,
    /// The address and UDP port the sender is reached on.
    pub addr: SocketAddr,
    /// A label for display, at most [`MIF_MAX_NAME`] octets (invalid UTF-8 is replaced on
    /// receipt; [`Self::emit`] cuts a longer name at a character boundary).
    pub name: String,
}

impl MifInterface {
    const FLAG_ALTERNATE: u8 = 0x01;

    /// Parses the Notification Data.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        const W: &str = "MIF_INTERFACE";
        let mut r = Reader::new(data);
        let id = nonzero_id(r.u16(W)?, "MIF_INTERFACE id")?;
        let flags = r.u8(W)?;
        let priority = r.u8(W)?;
        let port = r.u16(W)?;
        let family = r.u8(W)?;
        let name_len = usize::from(r.u8(W)?);
        let addr_len = match family {
            4 => 4,
            6 => 16,
            _ => {
                return Err(WireError::InvalidValue {
                    what: "MIF_INTERFACE family",
                });
            }
        };
        if name_len > MIF_MAX_NAME || r.remaining() != addr_len + name_len {
            return Err(WireError::BadLength { what: W });
        }
        let ip = if family == 4 {
            IpAddr::V4(Ipv4Addr::from(r.array::<4>(W)?))
        } else {
            IpAddr::V6(Ipv6Addr::from(r.array::<16>(W)?))
        };
        let name = String::from_utf8_lossy(r.take(name_len, W)?).into_owned();
        r.finish(W)?;
        Ok(MifInterface {
            id,
            alternate: flags & Self::FLAG_ALTERNATE != 0,
            priority,
            addr: SocketAddr::new(ip, port),
            name,
        })
    }

    /// The name as sent: at most [`MIF_MAX_NAME`] octets, cut at a character boundary.
    pub fn wire_name(&self) -> &str {
        let mut end = self.name.len().min(MIF_MAX_NAME);
        while !self.name.is_char_boundary(end) {
            end -= 1;
        }
        &self.name[..end]
    }

    /// The Notification Data.
    pub fn emit(&self) -> Vec<u8> {
        let name = self.wire_name().as_bytes();
        let mut b = Vec::with_capacity(8 + 16 + name.len());
        put_u16(&mut b, self.id);
        b.push(if self.alternate {
            Self::FLAG_ALTERNATE
        } else {
            0
        });
        b.push(self.priority);
        put_u16(&mut b, self.addr.port());
        match self.addr.ip() {
            IpAddr::V4(a) => {
                b.push(4);
                b.push(name.len() as u8);
                b.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                b.push(6);
                b.push(name.len() as u8);
                b.extend_from_slice(&a.octets());
            }
        }
        b.extend_from_slice(name);
        b
    }

    /// The Notify payload carrying it.
    pub fn notify(&self) -> Payload {
        notify_payload(NotifyType::MifInterface, self.emit())
    }
}

/// MIF_INTERFACE_LIST (52994), PROTOCOL section 3.2: 4 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MifInterfaceList {
    /// The list's generation (1 in IKE_AUTH, then counting up).
    pub generation: u32,
}

impl MifInterfaceList {
    /// Parses the Notification Data.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        if data.len() != 4 {
            return Err(WireError::BadLength {
                what: "MIF_INTERFACE_LIST",
            });
        }
        let mut r = Reader::new(data);
        Ok(MifInterfaceList {
            generation: r.u32("MIF_INTERFACE_LIST")?,
        })
    }

    /// The Notification Data.
    pub fn emit(&self) -> Vec<u8> {
        self.generation.to_be_bytes().to_vec()
    }

    /// The Notify payload carrying it.
    pub fn notify(&self) -> Payload {
        notify_payload(NotifyType::MifInterfaceList, self.emit())
    }
}

/// The role an operation gives an interface (ADD_INTERFACE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MifRole {
    /// Its paths carry traffic (code 0).
    Active,
    /// Its paths take over only while no active path is up (code 1).
    Standby,
}

/// An operation and its body (PROTOCOL 5.1). Interface IDs are the sender's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MifOp {
    /// 1: paths over a new interface.
    AddInterface {
        /// The interface.
        id: u16,
        /// Its role.
        role: MifRole,
    },
    /// 2: every path over the interface leaves.
    RemoveInterface {
        /// The interface.
        id: u16,
    },
    /// 3: make-before-break from one interface to another.
    SoftHandover {
        /// The interface left.
        from: u16,
        /// The interface taking over.
        to: u16,
    },
    /// 4: at once from one interface to another.
    HardHandover {
        /// The interface left.
        from: u16,
        /// The interface taking over.
        to: u16,
    },
    /// 5: the sender's standby interfaces become exactly these, in this order.
    SetAlternates {
        /// The alternates, at most [`MIF_MAX_INTERFACES`].
        ids: Vec<u16>,
    },
    /// 6: would the receiver accept paths over this interface? Nothing changes.
    Check {
        /// The interface.
        id: u16,
    },
}

impl MifOp {
    /// The operation code.
    pub fn code(&self) -> u8 {
        match self {
            MifOp::AddInterface { .. } => 1,
            MifOp::RemoveInterface { .. } => 2,
            MifOp::SoftHandover { .. } => 3,
            MifOp::HardHandover { .. } => 4,
            MifOp::SetAlternates { .. } => 5,
            MifOp::Check { .. } => 6,
        }
    }

    /// The upper-case name of PROTOCOL 5.1.
    pub fn name(&self) -> &'static str {
        match self {
            MifOp::AddInterface { .. } => "ADD_INTERFACE",
            MifOp::RemoveInterface { .. } => "REMOVE_INTERFACE",
            MifOp::SoftHandover { .. } => "SOFT_HANDOVER",
            MifOp::HardHandover { .. } => "HARD_HANDOVER",
            MifOp::SetAlternates { .. } => "SET_ALTERNATES",
            MifOp::Check { .. } => "CHECK",
        }
    }

    /// Every interface ID the operation names.
    pub fn ids(&self) -> Vec<u16> {
        match self {
            MifOp::AddInterface { id, .. }
            | MifOp::RemoveInterface { id }
            | MifOp::Check { id } => vec![*id],
            MifOp::SoftHandover { from, to } | MifOp::HardHandover { from, to } => {
                vec![*from, *to]
            }
            MifOp::SetAlternates { ids } => ids.clone(),
        }
    }
}

/// Which child SAs an operation concerns (PROTOCOL 5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MifSelection {
    /// Kind 0: every child SA of the IKE SA.
    All,
    /// Kind 1: 1 to [`MIF_MAX_SPIS`] SPIs, each the exchange initiator's inbound SPI.
    Spis(Vec<u32>),
    /// Kind 2: selectors of the sender's and the receiver's side, 0 to [`MIF_MAX_TS`] each
    /// (0: any), IPv4 or IPv6 ranges only.
    Ts {
        /// The sender's side.
        sender: Vec<TrafficSelector>,
        /// The receiver's side.
        receiver: Vec<TrafficSelector>,
    },
}

/// MIF_OPERATION (52995), PROTOCOL section 5.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MifOperation {
    /// The operation.
    pub op: MifOp,
    /// DRY_RUN (flag 0x01): answer as if applying, apply nothing.
    pub dry_run: bool,
    /// MOVE_IKE (flag 0x02): the IKE SA moves to the pair the request arrived on.
    pub move_ike: bool,
    /// The child SAs concerned.
    pub selection: MifSelection,
}

/// Why a MIF_OPERATION cannot be taken: the parse error and the MIF_REFUSED reason it
/// earns.
type OpError = (WireError, MifRefusal);

fn malformed(e: WireError) -> OpError {
    (e, MifRefusal::Malformed)
}

impl MifOperation {
    const FLAG_DRY_RUN: u8 = 0x01;
    const FLAG_MOVE_IKE: u8 = 0x02;

    /// Parses the Notification Data.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        Self::decode(data).map_err(|(e, _)| e)
    }

    /// The MIF_REFUSED reason a request whose MIF_OPERATION data is `data` earns, or the
    /// operation: UNKNOWN_OPERATION for an operation code outside 1 to 6, LIMIT for a
    /// selection beyond PROTOCOL 6.6's limits, MALFORMED for everything else.
    pub fn refusal(data: &[u8]) -> Result<Self, MifRefusal> {
        Self::decode(data).map_err(|(_, r)| r)
    }

    fn decode(data: &[u8]) -> Result<Self, OpError> {
        const W: &str = "MIF_OPERATION";
        let mut r = Reader::new(data);
        let code = r.u8(W).map_err(malformed)?;
        let flags = r.u8(W).map_err(malformed)?;
        r.u16(W).map_err(malformed)?;
        let id = |r: &mut Reader<'_>| -> Result<u16, OpError> {
            let v = r.u16(W).map_err(malformed)?;
            nonzero_id(v, "MIF_OPERATION interface id").map_err(malformed)
        };
        let op = match code {
            1 => {
                let i = id(&mut r)?;
                let role = match r.u8(W).map_err(malformed)? {
                    0 => MifRole::Active,
                    1 => MifRole::Standby,
                    _ => {
                        return Err(malformed(WireError::InvalidValue {
                            what: "MIF_OPERATION role",
                        }));
                    }
                };
                r.u8(W).map_err(malformed)?;
                MifOp::AddInterface { id: i, role }
            }
            2 | 6 => {
                let i = id(&mut r)?;
                r.u16(W).map_err(malformed)?;
                if code == 2 {
                    MifOp::RemoveInterface { id: i }
                } else {
                    MifOp::Check { id: i }
                }
            }
            3 | 4 => {
                let from = id(&mut r)?;
                let to = id(&mut r)?;
                if code == 3 {
                    MifOp::SoftHandover { from, to }
                } else {
                    MifOp::HardHandover { from, to }
                }
            }
            5 => {
                let count = usize::from(r.u8(W).map_err(malformed)?);
                r.u8(W).map_err(malformed)?;
                if count > usize::from(MIF_MAX_INTERFACES) {
                    return Err((
                        WireError::InvalidValue {
                            what: "MIF_OPERATION alternates count",
                        },
                        MifRefusal::Limit,
                    ));
                }
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    let i = id(&mut r)?;
                    if ids.contains(&i) {
                        return Err(malformed(WireError::InvalidValue {
                            what: "MIF_OPERATION alternates",
                        }));
                    }
                    ids.push(i);
                }
                MifOp::SetAlternates { ids }
            }
            _ => {
                return Err((
                    WireError::InvalidValue {
                        what: "MIF_OPERATION code",
                    },
                    MifRefusal::UnknownOperation,
                ));
            }
        };
        let selection = Self::decode_selection(&mut r)?;
        r.finish(W).map_err(malformed)?;
        Ok(MifOperation {
            op,
            dry_run: flags & Self::FLAG_DRY_RUN != 0,
            move_ike: flags & Self::FLAG_MOVE_IKE != 0,
            selection,
        })
    }

    fn decode_selection(r: &mut Reader<'_>) -> Result<MifSelection, OpError> {
        const W: &str = "MIF selection";
        let kind = r.u8(W).map_err(malformed)?;
        r.u8(W).map_err(malformed)?;
        let count = r.u16(W).map_err(malformed)?;
        match kind {
            0 if count == 0 => Ok(MifSelection::All),
            0 => Err(malformed(WireError::CountMismatch {
                what: W,
                declared: count.into(),
                found: 0,
            })),
            1 => {
                let count = usize::from(count);
                if count == 0 {
                    return Err(malformed(WireError::InvalidValue {
                        what: "MIF selection SPI count",
                    }));
                }
                if count > MIF_MAX_SPIS {
                    return Err((
                        WireError::InvalidValue {
                            what: "MIF selection SPI count",
                        },
                        MifRefusal::Limit,
                    ));
                }
                if r.remaining() != count * 4 {
                    return Err(malformed(WireError::CountMismatch {
                        what: "MIF selection SPIs",
                        declared: count,
                        found: r.remaining() / 4,
                    }));
                }
                let mut spis = Vec::with_capacity(count);
                for _ in 0..count {
                    let spi = r.u32(W).map_err(malformed)?;
                    if spi == 0 {
                        return Err(malformed(WireError::InvalidValue {
                            what: "MIF selection SPI",
                        }));
                    }
                    spis.push(spi);
                }
                Ok(MifSelection::Spis(spis))
            }
            2 => {
                let ns = usize::from(count >> 8);
                let nr = usize::from(count & 0xff);
                if ns > MIF_MAX_TS || nr > MIF_MAX_TS {
                    return Err((
                        WireError::InvalidValue {
                            what: "MIF selection selector count",
                        },
                        MifRefusal::Limit,
                    ));
                }
                let mut read = |n: usize| -> Result<Vec<TrafficSelector>, OpError> {
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        let ts = TrafficSelector::parse(r).map_err(malformed)?;
                        if matches!(ts, TrafficSelector::Unknown { .. }) {
                            return Err(malformed(WireError::InvalidValue {
                                what: "MIF selection selector type",
                            }));
                        }
                        v.push(ts);
                    }
                    Ok(v)
                };
                let sender = read(ns)?;
                let receiver = read(nr)?;
                Ok(MifSelection::Ts { sender, receiver })
            }
            _ => Err(malformed(WireError::InvalidValue {
                what: "MIF selection kind",
            })),
        }
    }

    /// The Notification Data. Lists beyond the limits of PROTOCOL 6.6 are cut to them.
    pub fn emit(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        b.push(self.op.code());
        let mut flags = 0;
        if self.dry_run {
            flags |= Self::FLAG_DRY_RUN;
        }
        if self.move_ike {
            flags |= Self::FLAG_MOVE_IKE;
        }
        b.push(flags);
        put_u16(&mut b, 0);
        match &self.op {
            MifOp::AddInterface { id, role } => {
                put_u16(&mut b, *id);
                b.push(match role {
                    MifRole::Active => 0,
                    MifRole::Standby => 1,
                });
                b.push(0);
            }
            MifOp::RemoveInterface { id } | MifOp::Check { id } => {
                put_u16(&mut b, *id);
                put_u16(&mut b, 0);
            }
            MifOp::SoftHandover { from, to } | MifOp::HardHandover { from, to } => {
                put_u16(&mut b, *from);
                put_u16(&mut b, *to);
            }
            MifOp::SetAlternates { ids } => {
                let ids = &ids[..ids.len().min(usize::from(MIF_MAX_INTERFACES))];
                b.push(ids.len() as u8);
                b.push(0);
                for id in ids {
                    put_u16(&mut b, *id);
                }
            }
        }
        match &self.selection {
            MifSelection::All => put_u32(&mut b, 0),
            MifSelection::Spis(spis) => {
                let spis = &spis[..spis.len().min(MIF_MAX_SPIS)];
                b.push(1);
                b.push(0);
                put_u16(&mut b, spis.len() as u16);
                for spi in spis {
                    put_u32(&mut b, *spi);
                }
            }
            MifSelection::Ts { sender, receiver } => {
                let s = &sender[..sender.len().min(MIF_MAX_TS)];
                let r = &receiver[..receiver.len().min(MIF_MAX_TS)];
                b.push(2);
                b.push(0);
                b.push(s.len() as u8);
                b.push(r.len() as u8);
                for ts in s.iter().chain(r) {
                    ts.emit(&mut b);
                }
            }
        }
        b
    }

    /// The Notify payload carrying it.
    pub fn notify(&self) -> Payload {
        notify_payload(NotifyType::MifOperation, self.emit())
    }
}

/// The answer for one child SA (PROTOCOL 5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MifStatus {
    /// 0: applied (or would be, in a dry run or CHECK).
    Applied,
    /// 1: local policy does not allow it.
    NotAllowed,
    /// 2: transport mode: the new selectors fall outside the responder's policy.
    OutsideSpd,
    /// 3: no child SA with this SPI.
    UnknownSa,
    /// 4: no interface of the responder's set of the new interface's family.
    AddressFamily,
    /// 5: more paths than Max Paths per Child.
    Limit,
    /// 6: nothing to do; counts as applied.
    NoChange,
    /// 7: the child would be left without a path; not applied.
    LastPath,
}

impl MifStatus {
    /// The status value.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status for a value, if it is one of 0 to 7.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => MifStatus::Applied,
            1 => MifStatus::NotAllowed,
            2 => MifStatus::OutsideSpd,
            3 => MifStatus::UnknownSa,
            4 => MifStatus::AddressFamily,
            5 => MifStatus::Limit,
            6 => MifStatus::NoChange,
            7 => MifStatus::LastPath,
            _ => return None,
        })
    }

    /// Whether the child SA is changed (APPLIED) or already so (NO_CHANGE).
    pub fn is_applied(self) -> bool {
        matches!(self, MifStatus::Applied | MifStatus::NoChange)
    }

    /// The upper-case name of PROTOCOL 5.3.
    pub fn name(self) -> &'static str {
        match self {
            MifStatus::Applied => "APPLIED",
            MifStatus::NotAllowed => "NOT_ALLOWED",
            MifStatus::OutsideSpd => "OUTSIDE_SPD",
            MifStatus::UnknownSa => "UNKNOWN_SA",
            MifStatus::AddressFamily => "ADDRESS_FAMILY",
            MifStatus::Limit => "LIMIT",
            MifStatus::NoChange => "NO_CHANGE",
            MifStatus::LastPath => "LAST_PATH",
        }
    }
}

/// MIF_RESULT (52996), PROTOCOL section 5.3: 8 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MifResult {
    /// The exchange initiator's inbound SPI of the child SA.
    pub spi: u32,
    /// What was done.
    pub status: MifStatus,
    /// The child's number of paths after the operation at the responder.
    pub paths: u8,
}

impl MifResult {
    /// Parses the Notification Data.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        const W: &str = "MIF_RESULT";
        if data.len() != 8 {
            return Err(WireError::BadLength { what: W });
        }
        let mut r = Reader::new(data);
        let spi = r.u32(W)?;
        let status = MifStatus::from_code(r.u8(W)?).ok_or(WireError::InvalidValue {
            what: "MIF_RESULT status",
        })?;
        let paths = r.u8(W)?;
        Ok(MifResult { spi, status, paths })
    }

    /// The Notification Data.
    pub fn emit(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8);
        put_u32(&mut b, self.spi);
        b.push(self.status.code());
        b.push(self.paths);
        put_u16(&mut b, 0);
        b
    }

    /// The Notify payload carrying it.
    pub fn notify(&self) -> Payload {
        notify_payload(NotifyType::MifResult, self.emit())
    }
}

/// MIF_REFUSED (52997), PROTOCOL section 5.4: why the whole operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MifRefusal {
    /// 1: a MIF notify of the request is malformed.
    Malformed,
    /// 2: an operation code this side does not know.
    UnknownOperation,
    /// 3: an interface ID not in the sender's table.
    UnknownInterface,
    /// 4: beyond a limit (interfaces, SPIs, selectors).
    Limit,
    /// 5: the extension is not in use on this IKE SA.
    NotNegotiated,
}

impl MifRefusal {
    /// The reason value.
    pub fn code(self) -> u8 {
        self as u8 + 1
    }

    /// The upper-case name of PROTOCOL 5.4.
    pub fn name(self) -> &'static str {
        match self {
            MifRefusal::Malformed => "MALFORMED",
            MifRefusal::UnknownOperation => "UNKNOWN_OPERATION",
            MifRefusal::UnknownInterface => "UNKNOWN_INTERFACE",
            MifRefusal::Limit => "LIMIT",
            MifRefusal::NotNegotiated => "NOT_NEGOTIATED",
        }
    }

    /// Parses the Notification Data (4 octets).
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        if data.len() != 4 {
            return Err(WireError::BadLength {
                what: "MIF_REFUSED",
            });
        }
        Ok(match data[0] {
            1 => MifRefusal::Malformed,
            2 => MifRefusal::UnknownOperation,
            3 => MifRefusal::UnknownInterface,
            4 => MifRefusal::Limit,
            5 => MifRefusal::NotNegotiated,
            _ => {
                return Err(WireError::InvalidValue {
                    what: "MIF_REFUSED reason",
                });
            }
        })
    }

    /// The Notification Data.
    pub fn emit(&self) -> Vec<u8> {
        vec![self.code(), 0, 0, 0]
    }

    /// The Notify payload carrying it.
    pub fn notify(&self) -> Payload {
        notify_payload(NotifyType::MifRefused, self.emit())
    }
}

/// MIF_CHILD (52998), PROTOCOL section 4.1: how the sender uses one child SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MifChild {
    /// How the sender schedules its outbound packets of the child.
    pub policy: Policy,
    /// REORDER (flag 0x01): the sender reorders the child's inbound packets.
    pub reorder: bool,
    /// The sender's interfaces the child may use, in preference order; empty: all it
    /// announced. At most [`MIF_MAX_INTERFACES`], non-zero, none twice.
    pub interfaces: Vec<u16>,
}

impl MifChild {
    const FLAG_REORDER: u8 = 0x01;

    /// Parses the Notification Data.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        const W: &str = "MIF_CHILD";
        let mut r = Reader::new(data);
        let policy = policy_from(r.u8(W)?)?;
        let flags = r.u8(W)?;
        let count = usize::from(r.u16(W)?);
        if count > usize::from(MIF_MAX_INTERFACES) {
            return Err(WireError::InvalidValue {
                what: "MIF_CHILD interface count",
            });
        }
        if r.remaining() != count * 2 {
            return Err(WireError::CountMismatch {
                what: "MIF_CHILD interfaces",
                declared: count,
                found: r.remaining() / 2,
            });
        }
        let interfaces = read_ids(&mut r, count, "MIF_CHILD interface id")?;
        r.finish(W)?;
        Ok(MifChild {
            policy,
            reorder: flags & Self::FLAG_REORDER != 0,
            interfaces,
        })
    }

    /// The Notification Data (at most [`MIF_MAX_INTERFACES`] IDs).
    pub fn emit(&self) -> Vec<u8> {
        let ids = &self.interfaces[..self.interfaces.len().min(usize::from(MIF_MAX_INTERFACES))];
        let mut b = Vec::with_capacity(4 + 2 * ids.len());
        b.push(policy_code(self.policy));
        b.push(if self.reorder { Self::FLAG_REORDER } else { 0 });
        put_u16(&mut b, ids.len() as u16);
        for id in ids {
            put_u16(&mut b, *id);
        }
        b
    }

    /// The Notify payload carrying it.
    pub fn notify(&self) -> Payload {
        notify_payload(NotifyType::MifChild, self.emit())
    }
}

/// The MIF notifies of one message, parsed (protocol 0, no SPI, as PROTOCOL 1 says; a
/// MIF notify with an SPI is malformed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MifNotifies {
    /// MIF_SUPPORTED, if present.
    pub supported: Option<MifSupported>,
    /// Every MIF_INTERFACE, in message order.
    pub interfaces: Vec<MifInterface>,
    /// MIF_INTERFACE_LIST, if present.
    pub list: Option<MifInterfaceList>,
    /// MIF_OPERATION, if present (kept as data: see [`MifOperation::refusal`]).
    pub operation: Option<Vec<u8>>,
    /// Every MIF_RESULT, in message order.
    pub results: Vec<MifResult>,
    /// MIF_REFUSED, if present.
    pub refused: Option<MifRefusal>,
    /// MIF_CHILD, if present.
    pub child: Option<MifChild>,
}

impl MifNotifies {
    /// Collects the MIF notifies of `payloads` (the decrypted inner payloads of a
    /// message). Any malformed one, two MIF_INTERFACE with one ID, a second copy of a notify that appears at most once,
    /// or more than [`MIF_MAX_INTERFACES`] interfaces or [`MIF_MAX_SPIS`] results is an
    /// error (the message is MALFORMED for the extension); other payloads are ignored.
    pub fn collect(payloads: &[Payload]) -> Result<Self, WireError> {
        let mut m = MifNotifies::default();
        fn once<T>(slot: &mut Option<T>, v: T, what: &'static str) -> Result<(), WireError> {
            if slot.is_some() {
                return Err(WireError::InvalidValue { what });
            }
            *slot = Some(v);
            Ok(())
        }
        for p in payloads {
            let Payload::Notify(n) = p else { continue };
            if !is_mif_notify(n.notify_type) {
                continue;
            }
            if !n.spi.is_empty() {
                return Err(WireError::InvalidValue {
                    what: "MIF notify SPI",
                });
            }
            let d = &n.data[..];
            match n.notify_type {
                NotifyType::MifSupported => once(
                    &mut m.supported,
                    MifSupported::parse(d)?,
                    "MIF_SUPPORTED twice",
                )?,
                NotifyType::MifInterface => {
                    if m.interfaces.len() >= usize::from(MIF_MAX_INTERFACES) {
                        return Err(WireError::InvalidValue {
                            what: "MIF_INTERFACE count",
                        });
                    }
                    let i = MifInterface::parse(d)?;
                    if m.interfaces.iter().any(|o| o.id == i.id) {
                        return Err(WireError::InvalidValue {
                            what: "MIF_INTERFACE id twice",
                        });
                    }
                    m.interfaces.push(i);
                }
                NotifyType::MifInterfaceList => once(
                    &mut m.list,
                    MifInterfaceList::parse(d)?,
                    "MIF_INTERFACE_LIST twice",
                )?,
                NotifyType::MifOperation => {
                    once(&mut m.operation, d.to_vec(), "MIF_OPERATION twice")?
                }
                NotifyType::MifResult => {
                    if m.results.len() >= MIF_MAX_SPIS {
                        return Err(WireError::InvalidValue {
                            what: "MIF_RESULT count",
                        });
                    }
                    m.results.push(MifResult::parse(d)?);
                }
                NotifyType::MifRefused => {
                    once(&mut m.refused, MifRefusal::parse(d)?, "MIF_REFUSED twice")?
                }
                NotifyType::MifChild => once(&mut m.child, MifChild::parse(d)?, "MIF_CHILD twice")?,
                _ => {}
            }
        }
        Ok(m)
    }

    /// Whether the message carried no MIF notify at all.
    pub fn is_empty(&self) -> bool {
        *self == MifNotifies::default()
    }
}

#[cfg(test)]
mod tests;
