//! The Notify payload (RFC 7296 section 3.10) with the notify message type registry
//! (including RFC 4555 MOBIKE and RFC 7383 fragmentation types), and the Delete payload
//! (section 3.11).
//!
//! ```text
//! Notify body: Protocol ID | SPI Size | Notify Message Type (2) | SPI | Notification Data
//! Delete body: Protocol ID | SPI Size | Num of SPIs (2) | SPIs (Num × SPI Size)
//! ```

use super::WireError;
use super::codec::{Reader, put_u16};
use super::sa::ProtocolId;

open_enum! {
    /// Notify message types (IANA "IKEv2 Notify Message Types"). Values below 16384 are
    /// errors, from 16384 on status types.
    pub enum NotifyType: u16 {
        /// `UNSUPPORTED_CRITICAL_PAYLOAD` (1); data: the one-octet payload type.
        UnsupportedCriticalPayload = 1,
        /// `INVALID_IKE_SPI` (4).
        InvalidIkeSpi = 4,
        /// `INVALID_MAJOR_VERSION` (5).
        InvalidMajorVersion = 5,
        /// `INVALID_SYNTAX` (7).
        InvalidSyntax = 7,
        /// `INVALID_MESSAGE_ID` (9); data: the four-octet message ID.
        InvalidMessageId = 9,
        /// `INVALID_SPI` (11); data: the SPI.
        InvalidSpi = 11,
        /// `NO_PROPOSAL_CHOSEN` (14).
        NoProposalChosen = 14,
        /// `INVALID_KE_PAYLOAD` (17); data: the two-octet accepted group.
        InvalidKePayload = 17,
        /// `AUTHENTICATION_FAILED` (24).
        AuthenticationFailed = 24,
        /// `SINGLE_PAIR_REQUIRED` (34).
        SinglePairRequired = 34,
        /// `NO_ADDITIONAL_SAS` (35).
        NoAdditionalSas = 35,
        /// `INTERNAL_ADDRESS_FAILURE` (36).
        InternalAddressFailure = 36,
        /// `FAILED_CP_REQUIRED` (37).
        FailedCpRequired = 37,
        /// `TS_UNACCEPTABLE` (38).
        TsUnacceptable = 38,
        /// `INVALID_SELECTORS` (39).
        InvalidSelectors = 39,
        /// `UNACCEPTABLE_ADDRESSES` (40), RFC 4555.
        UnacceptableAddresses = 40,
        /// `UNEXPECTED_NAT_DETECTED` (41), RFC 4555.
        UnexpectedNatDetected = 41,
        /// `TEMPORARY_FAILURE` (43).
        TemporaryFailure = 43,
        /// `CHILD_SA_NOT_FOUND` (44).
        ChildSaNotFound = 44,
        /// `INITIAL_CONTACT` (16384).
        InitialContact = 16384,
        /// `SET_WINDOW_SIZE` (16385).
        SetWindowSize = 16385,
        /// `ADDITIONAL_TS_POSSIBLE` (16386).
        AdditionalTsPossible = 16386,
        /// `IPCOMP_SUPPORTED` (16387).
        IpcompSupported = 16387,
        /// `NAT_DETECTION_SOURCE_IP` (16388).
        NatDetectionSourceIp = 16388,
        /// `NAT_DETECTION_DESTINATION_IP` (16389).
        NatDetectionDestinationIp = 16389,
        /// `COOKIE` (16390).
        Cookie = 16390,
        /// `USE_TRANSPORT_MODE` (16391).
        UseTransportMode = 16391,
        /// `HTTP_CERT_LOOKUP_SUPPORTED` (16392).
        HttpCertLookupSupported = 16392,
        /// `REKEY_SA` (16393).
        RekeySa = 16393,
        /// `ESP_TFC_PADDING_NOT_SUPPORTED` (16394).
        EspTfcPaddingNotSupported = 16394,
        /// `NON_FIRST_FRAGMENTS_ALSO` (16395).
        NonFirstFragmentsAlso = 16395,
        /// `MOBIKE_SUPPORTED` (16396), RFC 4555.
        MobikeSupported = 16396,
        /// `ADDITIONAL_IP4_ADDRESS` (16397), RFC 4555.
        AdditionalIp4Address = 16397,
        /// `ADDITIONAL_IP6_ADDRESS` (16398), RFC 4555.
        AdditionalIp6Address = 16398,
        /// `NO_ADDITIONAL_ADDRESSES` (16399), RFC 4555.
        NoAdditionalAddresses = 16399,
        /// `UPDATE_SA_ADDRESSES` (16400), RFC 4555.
        UpdateSaAddresses = 16400,
        /// `COOKIE2` (16401), RFC 4555.
        Cookie2 = 16401,
        /// `NO_NATS_ALLOWED` (16402), RFC 4555.
        NoNatsAllowed = 16402,
        /// `MULTIPLE_AUTH_SUPPORTED` (16404), RFC 4739.
        MultipleAuthSupported = 16404,
        /// `ANOTHER_AUTH_FOLLOWS` (16405), RFC 4739.
        AnotherAuthFollows = 16405,
        /// `REDIRECT_SUPPORTED` (16406), RFC 5685.
        RedirectSupported = 16406,
        /// `EAP_ONLY_AUTHENTICATION` (16417), RFC 5998.
        EapOnlyAuthentication = 16417,
        /// `IKEV2_FRAGMENTATION_SUPPORTED` (16430), RFC 7383.
        Ikev2FragmentationSupported = 16430,
        /// `SIGNATURE_HASH_ALGORITHMS` (16431), RFC 7427.
        SignatureHashAlgorithms = 16431,
        /// `CLONE_IKE_SA_SUPPORTED` (16432), RFC 7791.
        CloneIkeSaSupported = 16432,
        /// `CLONE_IKE_SA` (16433), RFC 7791.
        CloneIkeSa = 16433,
        /// `MIF_SUPPORTED` (52992, private use), mifsec's multi-interface extension
        /// (docs/PROTOCOL.md section 2).
        MifSupported = 52992,
        /// `MIF_INTERFACE` (52993, private use): one announced interface (PROTOCOL 3.1).
        MifInterface = 52993,
        /// `MIF_INTERFACE_LIST` (52994, private use): list generation (PROTOCOL 3.2).
        MifInterfaceList = 52994,
        /// `MIF_OPERATION` (52995, private use): an operation request (PROTOCOL 5.1).
        MifOperation = 52995,
        /// `MIF_RESULT` (52996, private use): the answer per child SA (PROTOCOL 5.3).
        MifResult = 52996,
        /// `MIF_REFUSED` (52997, private use): the whole operation refused (PROTOCOL 5.4).
        MifRefused = 52997,
        /// `MIF_CHILD` (52998, private use): a child SA's policy and interfaces
        /// (PROTOCOL 4.1).
        MifChild = 52998,
    }
}

impl NotifyType {
    /// First status type; lower values are error types.
    pub const FIRST_STATUS: u16 = 16384;

    /// Whether this is an error type (below 16384).
    pub const fn is_error(self) -> bool {
        self.to_raw() < Self::FIRST_STATUS
    }

    /// Whether this is a status type (16384 and above).
    pub const fn is_status(self) -> bool {
        !self.is_error()
    }

    /// First private-use status type (RFC 7296 section 3.10.1); mifsec's multi-interface
    /// extension uses 52992 to 52998.
    pub const FIRST_PRIVATE: u16 = 40960;

    /// Whether this is a private-use status type (40960 and above): one of the MIF
    /// notifies, or another implementation's private type.
    pub const fn is_private(self) -> bool {
        self.to_raw() >= Self::FIRST_PRIVATE
    }
}

/// The body of a Notify payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyPayload {
    /// The type of SA the SPI belongs to; [`ProtocolId::None`] when `spi` is empty.
    pub protocol: ProtocolId,
    /// The SPI of the SA concerned, often empty; at most 255 bytes.
    pub spi: Vec<u8>,
    /// The notify message type.
    pub notify_type: NotifyType,
    /// The notification data.
    pub data: Vec<u8>,
}

impl NotifyPayload {
    /// A notify about no particular SA (protocol 0, empty SPI).
    pub fn new(notify_type: NotifyType, data: Vec<u8>) -> Self {
        NotifyPayload {
            protocol: ProtocolId::None,
            spi: Vec::new(),
            notify_type,
            data,
        }
    }

    /// Parses a Notify payload body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let protocol = ProtocolId::from(r.u8("Notify payload")?);
        let spi_size = r.u8("Notify payload")?;
        let notify_type = NotifyType::from(r.u16("Notify payload")?);
        let spi = r.take(spi_size.into(), "Notify SPI")?.to_vec();
        Ok(NotifyPayload {
            protocol,
            spi,
            notify_type,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.push(self.protocol.into());
        buf.push(u8::try_from(self.spi.len()).unwrap_or(u8::MAX));
        put_u16(buf, self.notify_type.into());
        buf.extend_from_slice(&self.spi);
        buf.extend_from_slice(&self.data);
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        4 + self.spi.len() + self.data.len()
    }
}

/// The body of a Delete payload.
///
/// Every SPI in `spis` must be `spi_size` bytes long; the IKE SA itself is deleted with
/// protocol IKE, `spi_size` 0 and no SPIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePayload {
    /// The protocol of the SAs deleted.
    pub protocol: ProtocolId,
    /// The size of each SPI (0 for IKE, 4 for ESP and AH).
    pub spi_size: u8,
    /// The SPIs of the SAs deleted.
    pub spis: Vec<Vec<u8>>,
}

impl DeletePayload {
    /// A Delete of ESP SAs by their 4-byte SPIs.
    pub fn esp(spis: &[u32]) -> Self {
        DeletePayload {
            protocol: ProtocolId::Esp,
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        }
    }

    /// A Delete of the IKE SA the message is sent under.
    pub fn ike() -> Self {
        DeletePayload {
            protocol: ProtocolId::Ike,
            spi_size: 0,
            spis: Vec::new(),
        }
    }

    /// Parses a Delete payload body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let protocol = ProtocolId::from(r.u8("Delete payload")?);
        let spi_size = r.u8("Delete payload")?;
        let declared = usize::from(r.u16("Delete payload")?);
        let rest = r.rest();
        let size = usize::from(spi_size);
        let fits = match size {
            0 => rest.is_empty(),
            n => rest.len() % n == 0 && rest.len() / n == declared,
        };
        if !fits {
            return Err(WireError::BadLength {
                what: "Delete payload",
            });
        }
        // With a zero SPI size the count still has to agree: no SPI can be present.
        if size == 0 && declared != 0 {
            return Err(WireError::CountMismatch {
                what: "Delete SPIs",
                declared,
                found: 0,
            });
        }
        let spis = if size == 0 {
            Vec::new()
        } else {
            rest.chunks_exact(size).map(<[u8]>::to_vec).collect()
        };
        Ok(DeletePayload {
            protocol,
            spi_size,
            spis,
        })
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.push(self.protocol.into());
        buf.push(self.spi_size);
        put_u16(buf, u16::try_from(self.spis.len()).unwrap_or(u16::MAX));
        for spi in &self.spis {
            buf.extend_from_slice(spi);
        }
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        4 + self.spis.iter().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_numbers() {
        assert_eq!(u16::from(NotifyType::UnsupportedCriticalPayload), 1);
        assert_eq!(u16::from(NotifyType::ChildSaNotFound), 44);
        assert_eq!(u16::from(NotifyType::NatDetectionDestinationIp), 16389);
        assert_eq!(u16::from(NotifyType::MobikeSupported), 16396);
        assert_eq!(u16::from(NotifyType::NoNatsAllowed), 16402);
        assert_eq!(u16::from(NotifyType::Ikev2FragmentationSupported), 16430);
        assert_eq!(NotifyType::from(16431), NotifyType::SignatureHashAlgorithms);
        assert_eq!(NotifyType::from(12345), NotifyType::Unknown(12345));
        assert!(NotifyType::InvalidSyntax.is_error());
        assert!(NotifyType::Unknown(16500).is_status());
        assert!(!NotifyType::Unknown(16500).is_known());
        assert!(NotifyType::Unknown(7).is_known());
        assert_eq!(u16::from(NotifyType::MifSupported), 52992);
        assert_eq!(NotifyType::from(52998), NotifyType::MifChild);
        assert!(NotifyType::MifRefused.is_private() && NotifyType::MifRefused.is_status());
        assert!(!NotifyType::SignatureHashAlgorithms.is_private());
    }

    #[test]
    fn notify_roundtrip() {
        for n in [
            NotifyPayload::new(NotifyType::Cookie, vec![1; 16]),
            NotifyPayload {
                protocol: ProtocolId::Esp,
                spi: vec![1, 2, 3, 4],
                notify_type: NotifyType::RekeySa,
                data: vec![],
            },
            NotifyPayload {
                protocol: ProtocolId::Unknown(9),
                spi: vec![0xff],
                notify_type: NotifyType::Unknown(40000),
                data: vec![5, 6],
            },
        ] {
            let mut buf = Vec::new();
            n.emit(&mut buf);
            assert_eq!(buf.len(), n.buffer_len());
            assert_eq!(NotifyPayload::parse(&buf).unwrap(), n);
        }
        assert!(NotifyPayload::parse(&[0, 4, 0x40, 0x00, 1, 2, 3]).is_err());
    }

    #[test]
    fn delete_roundtrip_and_checks() {
        for d in [
            DeletePayload::esp(&[1, 0xdeadbeef]),
            DeletePayload::ike(),
            DeletePayload {
                protocol: ProtocolId::Unknown(200),
                spi_size: 3,
                spis: vec![vec![1, 2, 3]],
            },
        ] {
            let mut buf = Vec::new();
            d.emit(&mut buf);
            assert_eq!(buf.len(), d.buffer_len());
            assert_eq!(DeletePayload::parse(&buf).unwrap(), d);
        }
        // Count says 2, one SPI present.
        assert!(DeletePayload::parse(&[3, 4, 0, 2, 1, 2, 3, 4]).is_err());
        // Size 0 with a count.
        assert!(DeletePayload::parse(&[1, 0, 0, 1]).is_err());
        // Ragged SPI bytes.
        assert!(DeletePayload::parse(&[3, 4, 0, 1, 1, 2, 3, 4, 5]).is_err());
    }
}
