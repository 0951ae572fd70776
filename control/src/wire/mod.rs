//! The IKEv2 wire format: messages and payloads of RFC 7296 section 3, encrypted fragments
//! of RFC 7383, and the notify types of RFC 4555 (MOBIKE).
//!
//! The layer is pure framing: it parses bytes into typed representations and emits them
//! back, and knows no cryptography (SK/SKF data stays opaque) and no protocol state.
//!
//! Style (after smoltcp's `wire`): [`HeaderPacket`] and [`GenericPayloadPacket`] are
//! checked views reading fields in place; [`Message`], [`Header`] and the payload bodies
//! are representations with `parse`, `emit` and `buffer_len`. Registries are open enums
//! (after rustls): a value without a name is kept as `Unknown(raw)` and survives a round
//! trip. Parsing arbitrary bytes never panics; every violation is a [`WireError`], which
//! maps to the error notify the RFC prescribes.
//!
//! Modules:
//! * [`header`]: the IKE header.
//! * [`payload`]: the generic payload header and chain, [`Payload`], SK and SKF.
//! * [`sa`]: SA payload (proposals, transforms, attributes), transform IDs, KE payload.
//! * [`notify`]: Notify payload and notify types, Delete payload.
//! * [`auth`]: ID, CERT, CERTREQ and AUTH payloads.
//! * [`ts`]: traffic selector payloads.
//! * [`cp`]: configuration payload.
//! * [`message`]: a whole message.
//! * [`mif`]: mifsec's multi-interface extension (docs/PROTOCOL.md), the Notification Data
//!   of notify types 52992 to 52998.
//! * [`codec`]: checked reader and length-prefix writer.
//! * [`error`]: the error type, [`WireError`].

#[macro_use]
mod macros;

pub mod auth;
pub mod codec;
pub mod cp;
pub mod error;
pub mod header;
pub mod message;
pub mod mif;
pub mod notify;
pub mod payload;
pub mod sa;
pub mod ts;

#[cfg(test)]
mod tests;

/// The IKE major version this layer speaks.
pub const IKE_MAJOR_VERSION: u8 = 2;

pub use auth::{AuthMethod, AuthPayload, CertEncoding, CertPayload, IdPayload, IdType};
pub use cp::{CfgAttribute, CfgAttributeType, CfgType, CpPayload};
pub use error::WireError;
pub use header::{ExchangeType, Flags, HEADER_LEN, Header, HeaderPacket};
pub use message::Message;
pub use mif::{
    MifChild, MifInterface, MifInterfaceList, MifNotifies, MifOp, MifOperation, MifRefusal,
    MifResult, MifRole, MifSelection, MifStatus, MifSupported,
};
pub use notify::{DeletePayload, NotifyPayload, NotifyType};
pub use payload::{
    GENERIC_HEADER_LEN, GenericPayloadPacket, Payload, PayloadType, SkPayload, SkfPayload,
    UnknownPayload, emit_payloads, encode_inner_payloads, parse_payloads,
};
pub use sa::{
    AttributeType, AttributeValue, DhGroup, EncrId, EsnId, IntegId, KePayload, PrfId, Proposal,
    ProtocolId, SaPayload, Transform, TransformAttribute, TransformId, TransformType,
};
pub use ts::{TrafficSelector, TsPayload, TsType};
