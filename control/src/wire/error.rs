//! [`WireError`]: every way a received IKEv2 message can be malformed, and the notify the
//! RFC says to answer each with.

use core::fmt;

use super::notify::{NotifyPayload, NotifyType};

/// A violation of the IKEv2 wire format found while parsing.
///
/// Parsing stops at the first violation. [`WireError::notify_type`] tells which error
/// notify RFC 7296 prescribes for it; whether to send one at all is the state machine's
/// call (RFC 7296 section 2.21: errors in unauthenticated messages are mostly just dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The input ends before a field or structure named `what` is complete.
    Truncated {
        /// The field or structure cut short.
        what: &'static str,
    },
    /// A length field of `what` is below its structure's minimum or disagrees with the
    /// bytes around it.
    BadLength {
        /// The structure whose length field is wrong.
        what: &'static str,
    },
    /// Bytes are left over after the end of `what`.
    TrailingData {
        /// The structure that should have ended there.
        what: &'static str,
    },
    /// A count field of `what` disagrees with the number of items actually present.
    CountMismatch {
        /// The structure whose count is wrong.
        what: &'static str,
        /// The count the field declares.
        declared: usize,
        /// The number of items found.
        found: usize,
    },
    /// A field of `what` holds a value the format forbids (for example a "last
    /// substructure" marker that is neither "last" nor "more").
    InvalidValue {
        /// The offending field.
        what: &'static str,
    },
    /// The IKE header's major version is not 2 (the value is the major version received).
    UnsupportedVersion(u8),
    /// A payload of a type this parser does not implement has its critical bit set
    /// (the value is the payload type), so the whole message must be rejected.
    UnsupportedCriticalPayload(u8),
    /// An encrypted fragment (RFC 7383) numbers itself outside `1..=total`.
    BadFragmentNumber {
        /// The fragment number received.
        number: u16,
        /// The total number of fragments received.
        total: u16,
    },
}

impl WireError {
    /// The error notify type RFC 7296 (section 2.21 and 3.10.1) prescribes as the answer
    /// to this violation, or `None` where none applies.
    ///
    /// * [`WireError::UnsupportedCriticalPayload`] → `UNSUPPORTED_CRITICAL_PAYLOAD`.
    /// * [`WireError::UnsupportedVersion`] with a major version above 2 →
    ///   `INVALID_MAJOR_VERSION`; a lower one is IKEv1 and gets no IKEv2 answer.
    /// * every other violation → `INVALID_SYNTAX`.
    pub fn notify_type(&self) -> Option<NotifyType> {
        match *self {
            WireError::UnsupportedCriticalPayload(_) => {
                Some(NotifyType::UnsupportedCriticalPayload)
            }
            WireError::UnsupportedVersion(major) if major > super::IKE_MAJOR_VERSION => {
                Some(NotifyType::InvalidMajorVersion)
            }
            WireError::UnsupportedVersion(_) => None,
            WireError::Truncated { .. }
            | WireError::BadLength { .. }
            | WireError::TrailingData { .. }
            | WireError::CountMismatch { .. }
            | WireError::InvalidValue { .. }
            | WireError::BadFragmentNumber { .. } => Some(NotifyType::InvalidSyntax),
        }
    }

    /// The complete Notify payload to answer with, notification data included: for
    /// `UNSUPPORTED_CRITICAL_PAYLOAD` it is the one-octet payload type (RFC 7296 3.10.1);
    /// the other error notifies carry no data. `None` where [`Self::notify_type`] is `None`.
    pub fn notify(&self) -> Option<NotifyPayload> {
        let notify_type = self.notify_type()?;
        let data = match *self {
            WireError::UnsupportedCriticalPayload(ty) => vec![ty],
            _ => Vec::new(),
        };
        Some(NotifyPayload::new(notify_type, data))
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { what } => write!(f, "truncated {what}"),
            WireError::BadLength { what } => write!(f, "bad length field in {what}"),
            WireError::TrailingData { what } => write!(f, "trailing bytes after {what}"),
            WireError::CountMismatch {
                what,
                declared,
                found,
            } => write!(f, "{what} declares {declared} items but holds {found}"),
            WireError::InvalidValue { what } => write!(f, "invalid value in {what}"),
            WireError::UnsupportedVersion(major) => {
                write!(f, "unsupported IKE major version {major}")
            }
            WireError::UnsupportedCriticalPayload(ty) => {
                write!(f, "unsupported critical payload type {ty}")
            }
            WireError::BadFragmentNumber { number, total } => {
                write!(f, "fragment number {number} outside 1..={total}")
            }
        }
    }
}

impl std::error::Error for WireError {}
