//! 1-bit pixel packing for BINARY Segmentation.
//!
//! PS3.5 8.1.1: with Bits Allocated 1, pixels are packed bit by bit with no
//! padding between frames: frame f's pixel p is bit (f * rows * cols + p) of
//! the stream, least significant bit first within each byte. The whole
//! value is padded to an even number of bytes. (dicom-pixeldata pads each
//! frame to a byte, which is wrong when rows x cols is not a multiple of 8.)

/// Appends frames of booleans to one packed bit stream.
#[derive(Debug, Default, Clone)]
pub struct BitPacker {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitPacker {
    pub fn with_capacity_bits(bits: usize) -> BitPacker {
        BitPacker { bytes: Vec::with_capacity(bits.div_ceil(8) + 1), bits: 0 }
    }

    /// Appends one frame; `on(i)` says whether pixel i (row-major) is set.
    pub fn push_frame(&mut self, len: usize, mut on: impl FnMut(usize) -> bool) {
        self.bytes.resize((self.bits + len).div_ceil(8), 0);
        for i in 0..len {
            if on(i) {
                let b = self.bits + i;
                self.bytes[b / 8] |= 1 << (b % 8);
            }
        }
        self.bits += len;
    }

    pub fn bit_len(&self) -> usize {
        self.bits
    }

    /// The Pixel Data value: packed bits padded to an even length.
    pub fn finish(mut self) -> Vec<u8> {
        if self.bytes.len() % 2 == 1 {
            self.bytes.push(0);
        }
        self.bytes
    }
}

/// Reads bit `i` of a packed stream (for tests and read-back).
pub fn bit(packed: &[u8], i: usize) -> bool {
    packed[i / 8] >> (i % 8) & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_by_three_frames_pack_contiguously() {
        // rows x cols = 5 x 3 = 15 bits per frame: frame 2 starts at bit 15.
        let f1: Vec<bool> = (0..15).map(|i| i == 0 || i == 14).collect();
        let f2: Vec<bool> = (0..15).map(|i| i == 0 || i == 7).collect();
        let mut p = BitPacker::default();
        p.push_frame(15, |i| f1[i]);
        p.push_frame(15, |i| f2[i]);
        assert_eq!(p.bit_len(), 30);
        let out = p.finish();
        // 30 bits -> 4 bytes (already even).
        assert_eq!(out.len(), 4);
        // bits 0 and 14 (frame 1), 15 and 22 (frame 2)
        assert_eq!(out, vec![0b0000_0001, 0b1100_0000, 0b0100_0000, 0]);
        for i in 0..30 {
            let want = if i < 15 { f1[i] } else { f2[i - 15] };
            assert_eq!(bit(&out, i), want, "bit {i}");
        }
    }

    #[test]
    fn odd_byte_count_is_padded_to_even() {
        // one 5x3 frame = 15 bits = 2 bytes; three frames = 45 bits = 6 bytes; one 3x3 = 9 bits = 2 bytes
        let mut p = BitPacker::default();
        p.push_frame(15, |_| true);
        assert_eq!(p.finish(), vec![0xff, 0x7f]);
        let mut p = BitPacker::default();
        for _ in 0..3 {
            p.push_frame(15, |_| true);
        }
        let out = p.finish();
        assert_eq!(out.len(), 6);
        assert_eq!(out[5], 0b0001_1111);
        let mut p = BitPacker::default();
        p.push_frame(3, |_| true);
        assert_eq!(p.finish(), vec![0b111, 0]);
    }

    #[test]
    fn lsb_first_within_bytes() {
        let mut p = BitPacker::default();
        p.push_frame(8, |i| i == 1);
        assert_eq!(p.finish(), vec![0b10, 0]);
    }

    #[test]
    fn empty_frames_take_space() {
        let mut p = BitPacker::default();
        p.push_frame(15, |_| false);
        p.push_frame(15, |i| i == 0);
        let out = p.finish();
        assert!(bit(&out, 15));
        assert_eq!(out.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
    }
}
