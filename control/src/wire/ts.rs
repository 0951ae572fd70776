//! The Traffic Selector payloads TSi and TSr (RFC 7296 section 3.13).
//!
//! ```text
//! TS body:  Number of TSs | RESERVED (3) | Traffic Selectors
//! Selector: TS Type | IP Protocol ID | Selector Length (2)
//!           Start Port (2) | End Port (2) | Starting Address | Ending Address
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::WireError;
use super::codec::{Reader, put_u16};

open_enum! {
    /// Traffic selector types (IANA "IKEv2 Traffic Selector Types").
    pub enum TsType: u8 {
        /// `TS_IPV4_ADDR_RANGE` (7).
        Ipv4AddrRange = 7,
        /// `TS_IPV6_ADDR_RANGE` (8).
        Ipv6AddrRange = 8,
        /// `TS_FC_ADDR_RANGE` (9), RFC 4595.
        FcAddrRange = 9,
    }
}

/// Selector Length of an IPv4 range selector.
const IPV4_SELECTOR_LEN: usize = 16;
/// Selector Length of an IPv6 range selector.
const IPV6_SELECTOR_LEN: usize = 40;

/// One traffic selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficSelector {
    /// `TS_IPV4_ADDR_RANGE`.
    Ipv4 {
        /// IP protocol number, 0 for any.
        ip_protocol: u8,
        /// First port (or ICMP type/code, RFC 7296 3.13.1).
        start_port: u16,
        /// Last port.
        end_port: u16,
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
    },
    /// `TS_IPV6_ADDR_RANGE`.
    Ipv6 {
        /// IP protocol number, 0 for any.
        ip_protocol: u8,
        /// First port.
        start_port: u16,
        /// Last port.
        end_port: u16,
        /// First address.
        start: Ipv6Addr,
        /// Last address.
        end: Ipv6Addr,
    },
    /// A selector type without a decoder here (`ts_type` is neither 7 nor 8), kept raw.
    Unknown {
        /// The TS type.
        ts_type: u8,
        /// The octet after the type (the IP protocol ID for address ranges).
        octet1: u8,
        /// The bytes after the Selector Length field.
        data: Vec<u8>,
    },
}

impl TrafficSelector {
    /// All IPv4 traffic: any protocol, ports 0-65535, 0.0.0.0-255.255.255.255.
    pub fn ipv4_any() -> Self {
        TrafficSelector::Ipv4 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start: Ipv4Addr::UNSPECIFIED,
            end: Ipv4Addr::BROADCAST,
        }
    }

    /// All IPv6 traffic: any protocol, all ports, `::`-`ffff:...:ffff`.
    pub fn ipv6_any() -> Self {
        TrafficSelector::Ipv6 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start: Ipv6Addr::UNSPECIFIED,
            end: Ipv6Addr::from(u128::MAX),
        }
    }

    /// The TS type.
    pub fn ts_type(&self) -> TsType {
        match self {
            TrafficSelector::Ipv4 { .. } => TsType::Ipv4AddrRange,
            TrafficSelector::Ipv6 { .. } => TsType::Ipv6AddrRange,
            TrafficSelector::Unknown { ts_type, .. } => TsType::from(*ts_type),
        }
    }

    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let ts_type = TsType::from(r.u8("traffic selector")?);
        let octet1 = r.u8("traffic selector")?;
        let len = usize::from(r.u16("traffic selector")?);
        let expected = match ts_type {
            TsType::Ipv4AddrRange => Some(IPV4_SELECTOR_LEN),
            TsType::Ipv6AddrRange => Some(IPV6_SELECTOR_LEN),
            _ => None,
        };
        if len < 4 || expected.is_some_and(|e| e != len) {
            return Err(WireError::BadLength {
                what: "traffic selector",
            });
        }
        let mut body = Reader::new(r.take(len - 4, "traffic selector")?);
        let ts = match ts_type {
            TsType::Ipv4AddrRange => TrafficSelector::Ipv4 {
                ip_protocol: octet1,
                start_port: body.u16("traffic selector")?,
                end_port: body.u16("traffic selector")?,
                start: Ipv4Addr::from(body.array::<4>("traffic selector")?),
                end: Ipv4Addr::from(body.array::<4>("traffic selector")?),
            },
            TsType::Ipv6AddrRange => TrafficSelector::Ipv6 {
                ip_protocol: octet1,
                start_port: body.u16("traffic selector")?,
                end_port: body.u16("traffic selector")?,
                start: Ipv6Addr::from(body.array::<16>("traffic selector")?),
                end: Ipv6Addr::from(body.array::<16>("traffic selector")?),
            },
            other => TrafficSelector::Unknown {
                ts_type: other.into(),
                octet1,
                data: body.rest().to_vec(),
            },
        };
        body.finish("traffic selector")?;
        Ok(ts)
    }

    pub(super) fn emit(&self, buf: &mut Vec<u8>) {
        match self {
            TrafficSelector::Ipv4 {
                ip_protocol,
                start_port,
                end_port,
                start,
                end,
            } => {
                buf.push(TsType::Ipv4AddrRange.into());
                buf.push(*ip_protocol);
                put_u16(buf, IPV4_SELECTOR_LEN as u16);
                put_u16(buf, *start_port);
                put_u16(buf, *end_port);
                buf.extend_from_slice(&start.octets());
                buf.extend_from_slice(&end.octets());
            }
            TrafficSelector::Ipv6 {
                ip_protocol,
                start_port,
                end_port,
                start,
                end,
            } => {
                buf.push(TsType::Ipv6AddrRange.into());
                buf.push(*ip_protocol);
                put_u16(buf, IPV6_SELECTOR_LEN as u16);
                put_u16(buf, *start_port);
                put_u16(buf, *end_port);
                buf.extend_from_slice(&start.octets());
                buf.extend_from_slice(&end.octets());
            }
            TrafficSelector::Unknown {
                ts_type,
                octet1,
                data,
            } => {
                buf.push(*ts_type);
                buf.push(*octet1);
                put_u16(buf, u16::try_from(4 + data.len()).unwrap_or(u16::MAX));
                buf.extend_from_slice(data);
            }
        }
    }

    /// The selector's length on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            TrafficSelector::Ipv4 { .. } => IPV4_SELECTOR_LEN,
            TrafficSelector::Ipv6 { .. } => IPV6_SELECTOR_LEN,
            TrafficSelector::Unknown { data, .. } => 4 + data.len(),
        }
    }
}

/// The body of a TSi or TSr payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsPayload {
    /// The selectors, at most 255.
    pub selectors: Vec<TrafficSelector>,
}

impl TsPayload {
    /// Parses a TS payload body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let declared = usize::from(r.u8("TS payload")?);
        r.take(3, "TS payload")?;
        let mut selectors = Vec::new();
        while !r.is_empty() {
            selectors.push(TrafficSelector::parse(&mut r)?);
        }
        if selectors.len() != declared {
            return Err(WireError::CountMismatch {
                what: "traffic selectors",
                declared,
                found: selectors.len(),
            });
        }
        Ok(TsPayload { selectors })
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.push(u8::try_from(self.selectors.len()).unwrap_or(u8::MAX));
        buf.extend_from_slice(&[0, 0, 0]);
        for ts in &self.selectors {
            ts.emit(buf);
        }
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        4 + self
            .selectors
            .iter()
            .map(TrafficSelector::buffer_len)
            .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_roundtrip_and_layout() {
        let ts = TsPayload {
            selectors: vec![
                TrafficSelector::Ipv4 {
                    ip_protocol: 17,
                    start_port: 500,
                    end_port: 4500,
                    start: Ipv4Addr::new(10, 0, 0, 0),
                    end: Ipv4Addr::new(10, 0, 0, 255),
                },
                TrafficSelector::ipv6_any(),
                TrafficSelector::Unknown {
                    ts_type: 9,
                    octet1: 0,
                    data: vec![1, 2, 3],
                },
            ],
        };
        let mut buf = Vec::new();
        ts.emit(&mut buf);
        assert_eq!(buf.len(), ts.buffer_len());
        assert_eq!(
            &buf[..20],
            &[
                3, 0, 0, 0, 7, 17, 0, 16, 0x01, 0xf4, 0x11, 0x94, 10, 0, 0, 0, 10, 0, 0, 255
            ]
        );
        assert_eq!(TsPayload::parse(&buf).unwrap(), ts);
        assert_eq!(ts.selectors[2].ts_type(), TsType::FcAddrRange);

        let mut bad = buf.clone();
        bad[0] = 2;
        assert!(matches!(
            TsPayload::parse(&bad),
            Err(WireError::CountMismatch { .. })
        ));
        let mut bad = buf.clone();
        bad[7] = 17; // IPv4 selector length must be 16
        assert_eq!(
            TsPayload::parse(&bad),
            Err(WireError::BadLength {
                what: "traffic selector"
            })
        );
    }
}
