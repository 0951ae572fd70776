//! Byte-level reading and writing shared by every payload.
//!
//! [`Reader`] is a cursor over a borrowed slice whose every read is length-checked and
//! returns [`WireError::Truncated`] instead of panicking. [`LengthSlot`] reserves a length
//! field in an output buffer and fills it in once the structure it measures has been
//! written, so emitters never compute a length twice by hand.

use super::WireError;

/// A cursor over a borrowed byte slice; reads never panic.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, positioned at its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes; `what` names the field for the error if there are fewer.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or(WireError::Truncated { what })?;
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Everything not read yet; the reader is left empty.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Fails with [`WireError::TrailingData`] unless every byte has been read.
    pub fn finish(&self, what: &'static str) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingData { what })
        }
    }
}

/// A reserved big-endian length field, filled in by [`LengthSlot::fill`] once the
/// measured structure is complete.
///
/// The length counts from `start` (an offset into the same buffer, usually the first byte
/// of the structure's header) to the end of the buffer at the time of `fill`.
#[derive(Debug)]
#[must_use = "a reserved length stays zero unless filled"]
pub struct LengthSlot {
    at: usize,
    start: usize,
    width: usize,
}

impl LengthSlot {
    /// Reserves a 2-byte length at the end of `buf`, measuring from offset `start`.
    pub fn u16(buf: &mut Vec<u8>, start: usize) -> Self {
        Self::reserve(buf, start, 2)
    }

    /// Reserves a 4-byte length at the end of `buf`, measuring from offset `start`.
    pub fn u32(buf: &mut Vec<u8>, start: usize) -> Self {
        Self::reserve(buf, start, 4)
    }

    fn reserve(buf: &mut Vec<u8>, start: usize, width: usize) -> Self {
        let at = buf.len();
        buf.resize(at + width, 0);
        LengthSlot { at, start, width }
    }

    /// Writes the length now measured. A length too large for the field saturates to the
    /// field's maximum, which no peer will accept as consistent (see the size limits on
    /// [`super::Message::emit`]).
    pub fn fill(self, buf: &mut [u8]) {
        let len = buf.len().saturating_sub(self.start);
        let bytes: [u8; 4] = match self.width {
            2 => {
                let v = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
                [v[0], v[1], 0, 0]
            }
            _ => u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes(),
        };
        if let (Some(dst), Some(src)) = (
            buf.get_mut(self.at..self.at + self.width),
            bytes.get(..self.width),
        ) {
            dst.copy_from_slice(src);
        }
    }
}

/// Appends a big-endian `u16`.
pub fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `u32`.
pub fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `u64`.
pub fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a").unwrap(), 0x0102);
        assert_eq!(r.u16("b"), Err(WireError::Truncated { what: "b" }));
        assert_eq!(r.u8("c").unwrap(), 3);
        assert!(r.is_empty());
        assert_eq!(r.finish("x"), Ok(()));
    }

    #[test]
    fn length_slot_measures_from_start() {
        let mut buf = vec![0xaa];
        let slot = LengthSlot::u16(&mut buf, 1);
        buf.extend_from_slice(&[1, 2, 3]);
        slot.fill(&mut buf);
        assert_eq!(buf, [0xaa, 0, 5, 1, 2, 3]);

        let mut buf = Vec::new();
        let slot = LengthSlot::u32(&mut buf, 0);
        slot.fill(&mut buf);
        assert_eq!(buf, [0, 0, 0, 4]);
    }
}
