//! The Configuration payload (RFC 7296 section 3.15), used for remote-access address
//! assignment.
//!
//! ```text
//! CP body:   CFG Type | RESERVED (3) | Configuration Attributes
//! Attribute: R (1 bit) Attribute Type (15 bits) | Length (2) | Value
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::WireError;
use super::codec::{Reader, put_u16};

open_enum! {
    /// Configuration payload types (IANA "IKEv2 Configuration Payload CFG Types").
    pub enum CfgType: u8 {
        /// `CFG_REQUEST` (1).
        Request = 1,
        /// `CFG_REPLY` (2).
        Reply = 2,
        /// `CFG_SET` (3).
        Set = 3,
        /// `CFG_ACK` (4).
        Ack = 4,
    }
}

open_enum! {
    /// Configuration attribute types (IANA "IKEv2 Configuration Payload Attribute Types");
    /// 15 bits on the wire.
    pub enum CfgAttributeType: u16 {
        /// `INTERNAL_IP4_ADDRESS` (1): 0 or 4 octets.
        InternalIp4Address = 1,
        /// `INTERNAL_IP4_NETMASK` (2): 0 or 4 octets.
        InternalIp4Netmask = 2,
        /// `INTERNAL_IP4_DNS` (3): 0 or 4 octets.
        InternalIp4Dns = 3,
        /// `INTERNAL_IP4_NBNS` (4): 0 or 4 octets.
        InternalIp4Nbns = 4,
        /// `INTERNAL_IP4_DHCP` (6): 0 or 4 octets.
        InternalIp4Dhcp = 6,
        /// `APPLICATION_VERSION` (7): 0 or more octets.
        ApplicationVersion = 7,
        /// `INTERNAL_IP6_ADDRESS` (8): 0 or 17 octets (address and prefix length).
        InternalIp6Address = 8,
        /// `INTERNAL_IP6_DNS` (10): 0 or 16 octets.
        InternalIp6Dns = 10,
        /// `INTERNAL_IP6_DHCP` (12): 0 or 16 octets.
        InternalIp6Dhcp = 12,
        /// `INTERNAL_IP4_SUBNET` (13): 0 or 8 octets (address and mask).
        InternalIp4Subnet = 13,
        /// `SUPPORTED_ATTRIBUTES` (14): a multiple of 2 octets.
        SupportedAttributes = 14,
        /// `INTERNAL_IP6_SUBNET` (15): 0 or 17 octets.
        InternalIp6Subnet = 15,
    }
}

/// One configuration attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfgAttribute {
    /// The attribute type (only its low 15 bits are emitted; the R bit is sent as 0).
    pub attr_type: CfgAttributeType,
    /// The value, empty in requests; at most 65535 bytes.
    pub value: Vec<u8>,
}

impl CfgAttribute {
    /// An attribute with an empty value, as sent in a `CFG_REQUEST`.
    pub fn request(attr_type: CfgAttributeType) -> Self {
        CfgAttribute {
            attr_type,
            value: Vec::new(),
        }
    }

    /// An attribute whose value is an IPv4 address.
    pub fn ipv4(attr_type: CfgAttributeType, addr: Ipv4Addr) -> Self {
        CfgAttribute {
            attr_type,
            value: addr.octets().to_vec(),
        }
    }

    /// An attribute whose value is an IPv6 address (e.g. `INTERNAL_IP6_DNS`).
    pub fn ipv6(attr_type: CfgAttributeType, addr: Ipv6Addr) -> Self {
        CfgAttribute {
            attr_type,
            value: addr.octets().to_vec(),
        }
    }

    /// An attribute whose value is an IPv6 address and prefix length
    /// (`INTERNAL_IP6_ADDRESS`, `INTERNAL_IP6_SUBNET`).
    pub fn ipv6_prefix(attr_type: CfgAttributeType, addr: Ipv6Addr, prefix_len: u8) -> Self {
        let mut value = addr.octets().to_vec();
        value.push(prefix_len);
        CfgAttribute { attr_type, value }
    }

    /// The value as an IPv4 address, if it is 4 bytes long.
    pub fn as_ipv4(&self) -> Option<Ipv4Addr> {
        <[u8; 4]>::try_from(self.value.as_slice())
            .ok()
            .map(Ipv4Addr::from)
    }

    /// The value as an IPv6 address, if it is 16 bytes long.
    pub fn as_ipv6(&self) -> Option<Ipv6Addr> {
        <[u8; 16]>::try_from(self.value.as_slice())
            .ok()
            .map(Ipv6Addr::from)
    }

    /// The value as an IPv6 address and prefix length, if it is 17 bytes long.
    pub fn as_ipv6_prefix(&self) -> Option<(Ipv6Addr, u8)> {
        let (addr, prefix) = self.value.split_first_chunk::<16>()?;
        match prefix {
            [len] => Some((Ipv6Addr::from(*addr), *len)),
            _ => None,
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let raw_type = r.u16("configuration attribute")? & 0x7fff;
        let len = r.u16("configuration attribute")?;
        let value = r.take(len.into(), "configuration attribute")?.to_vec();
        Ok(CfgAttribute {
            attr_type: CfgAttributeType::from(raw_type),
            value,
        })
    }

    fn emit(&self, buf: &mut Vec<u8>) {
        put_u16(buf, self.attr_type.to_raw() & 0x7fff);
        put_u16(buf, u16::try_from(self.value.len()).unwrap_or(u16::MAX));
        buf.extend_from_slice(&self.value);
    }

    /// The attribute's length on the wire.
    pub fn buffer_len(&self) -> usize {
        4 + self.value.len()
    }
}

/// The body of a CP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpPayload {
    /// The CFG type.
    pub cfg_type: CfgType,
    /// The attributes, in wire order.
    pub attributes: Vec<CfgAttribute>,
}

impl CpPayload {
    /// Parses a CP payload body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let cfg_type = CfgType::from(r.u8("CP payload")?);
        r.take(3, "CP payload")?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            attributes.push(CfgAttribute::parse(&mut r)?);
        }
        Ok(CpPayload {
            cfg_type,
            attributes,
        })
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[self.cfg_type.into(), 0, 0, 0]);
        for a in &self.attributes {
            a.emit(buf);
        }
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        4 + self
            .attributes
            .iter()
            .map(CfgAttribute::buffer_len)
            .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_roundtrip_and_helpers() {
        let cp = CpPayload {
            cfg_type: CfgType::Reply,
            attributes: vec![
                CfgAttribute::ipv4(
                    CfgAttributeType::InternalIp4Address,
                    Ipv4Addr::new(10, 1, 2, 3),
                ),
                CfgAttribute::ipv4(
                    CfgAttributeType::InternalIp4Netmask,
                    Ipv4Addr::new(255, 255, 255, 0),
                ),
                CfgAttribute::ipv4(CfgAttributeType::InternalIp4Dns, Ipv4Addr::new(1, 1, 1, 1)),
                CfgAttribute::ipv6_prefix(
                    CfgAttributeType::InternalIp6Address,
                    Ipv6Addr::LOCALHOST,
                    64,
                ),
                CfgAttribute::ipv6(CfgAttributeType::InternalIp6Dns, Ipv6Addr::LOCALHOST),
                CfgAttribute::request(CfgAttributeType::Unknown(0x7abc)),
            ],
        };
        let mut buf = Vec::new();
        cp.emit(&mut buf);
        assert_eq!(buf.len(), cp.buffer_len());
        assert_eq!(&buf[..12], &[2, 0, 0, 0, 0, 1, 0, 4, 10, 1, 2, 3]);
        let back = CpPayload::parse(&buf).unwrap();
        assert_eq!(back, cp);
        assert_eq!(
            back.attributes[0].as_ipv4(),
            Some(Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_eq!(
            back.attributes[3].as_ipv6_prefix(),
            Some((Ipv6Addr::LOCALHOST, 64))
        );
        assert_eq!(back.attributes[4].as_ipv6(), Some(Ipv6Addr::LOCALHOST));
        assert_eq!(back.attributes[5].as_ipv4(), None);
        assert!(CpPayload::parse(&[1, 0, 0, 0, 0, 1, 0, 4, 10]).is_err());
    }
}
