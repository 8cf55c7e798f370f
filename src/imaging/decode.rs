//! Decode a stored instance to f32 samples in modality units.
//!
//! Compressed transfer syntaxes go through `dicom-pixeldata` (its codecs:
//! JPEG baseline/extended/lossless, JPEG 2000, RLE; JPEG-LS with the `charls`
//! feature); without CharLS, grey-scale JPEG-LS goes through pure_jpegls and
//! colour JPEG-LS is an [`ImagingError::CodecNotBuilt`]; native pixel
//! data is read here. Everything after the codec is ours, so that it is the
//! same for every transfer syntax:
//!
//! - stored values are masked to Bits Stored (High Bit) and sign-extended
//!   when Pixel Representation is 1;
//! - Rescale Slope/Intercept is applied per frame: from the frame's Pixel
//!   Value Transformation Sequence (0028,9145) in the Per-frame Functional
//!   Groups, else the Shared Functional Groups, else the top level; RT Dose
//!   without rescale uses Dose Grid Scaling (3004,000E); a Modality LUT
//!   Sequence (0028,3000), when present, maps the stored values instead;
//! - MONOCHROME1 is inverted into MONOCHROME2 sense over the rescaled
//!   stored range (`min + max - v`), and the result says so;
//! - RGB, YBR_FULL, YBR_FULL_422 (native or JPEG), YBR_ICT/RCT (JPEG 2000)
//!   give RGB, kept or reduced to luminance (0.299 R + 0.587 G + 0.114 B);
//! - PALETTE COLOR goes through the Red/Green/Blue palette LUTs (normal or
//!   segmented); the output values are the LUT entries as stored (0..255 or
//!   0..65535, like pydicom).
//!
//! Anything else is an [`ImagingError::UnsupportedPixelData`] naming the SOP
//! Instance UID and the reason.

use std::borrow::Cow;
use std::path::Path;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::Endianness;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::attrs::{self, Ds};
use super::error::{ImagingError, Result};

/// What to do with colour images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// One sample per pixel: 0.299 R + 0.587 G + 0.114 B.
    #[default]
    Luminance,
    /// Three samples per pixel, interleaved R, G, B.
    Rgb,
}

/// The modality rescale applied to one frame (`slope * stored + intercept`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescale {
    pub slope: f64,
    pub intercept: f64,
}

impl Rescale {
    pub const IDENTITY: Rescale = Rescale { slope: 1.0, intercept: 0.0 };
    pub fn apply(&self, v: f64) -> f64 {
        self.slope * v + self.intercept
    }
}

/// A decoded instance: every frame, in modality units.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub rows: usize,
    pub cols: usize,
    pub frames: usize,
    /// 1 (grey or luminance) or 3 (RGB).
    pub samples: usize,
    /// Frame-major, then row-major, samples interleaved:
    /// index = ((frame * rows + row) * cols + col) * samples + sample.
    pub data: Vec<f32>,
    /// The stored image was MONOCHROME1 and has been inverted, so that
    /// higher values are brighter, as in MONOCHROME2.
    pub inverted_monochrome1: bool,
    /// Photometric Interpretation as stored in the object.
    pub photometric: String,
    /// The rescale applied to each frame (identity for colour images, and
    /// when a Modality LUT Sequence was applied).
    pub rescale: Vec<Rescale>,
    /// A non-linear Modality LUT Sequence (0028,3000) mapped the stored values.
    pub modality_lut: bool,
}

impl DecodedImage {
    /// Number of values in one frame.
    pub fn frame_len(&self) -> usize {
        self.rows * self.cols * self.samples
    }

    /// The values of frame `f` (0-based).
    pub fn frame(&self, f: usize) -> &[f32] {
        let n = self.frame_len();
        &self.data[f * n..(f + 1) * n]
    }

    /// One value; frame, row and column are 0-based.
    pub fn get(&self, frame: usize, row: usize, col: usize, sample: usize) -> f32 {
        self.data[((frame * self.rows + row) * self.cols + col) * self.samples + sample]
    }
}

/// Open a Part 10 file (whole object, pixel data included).
pub fn open(path: &Path) -> Result<DefaultDicomObject> {
    dicom_object::open_file(path).map_err(|e| ImagingError::Open { path: path.to_path_buf(), reason: crate::error_chain(&e) })
}

/// Decode every frame of the Part 10 file at `path`.
pub fn decode_file(path: &Path, color: ColorMode) -> Result<DecodedImage> {
    decode_object(&open(path)?, color)
}

/// Decode every frame of an object.
pub fn decode_object(obj: &DefaultDicomObject, color: ColorMode) -> Result<DecodedImage> {
    let uid = attrs::sop_instance_uid(obj);
    let fmt = PixelFormat::read(obj, &uid)?;
    let ts_uid = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();

    // float pixel data: no stored-value semantics, take as is
    if obj.get(tags::PIXEL_DATA).is_none() {
        if let Some(img) = float_pixel_data(obj, &fmt, &uid)? {
            return Ok(img);
        }
        return Err(ImagingError::MissingAttribute { sop_instance_uid: uid, attribute: "PixelData (7FE0,0010)" });
    }

    let (bytes, photometric) = native_bytes(obj, &fmt, &uid, &ts_uid)?;
    convert(obj, &fmt, &uid, &bytes, &photometric, color)
}

/// Replaces encapsulated JPEG-LS Pixel Data by its native samples (OB for 8
/// bits, OW for 16), so that the object can be written in an uncompressed
/// transfer syntax: the transcoding fallback of a build without CharLS, whose
/// dicom-pixeldata has no JPEG-LS codec to transcode with.
pub fn decompress_jpeg_ls(obj: &mut DefaultDicomObject) -> Result<()> {
    let uid = attrs::sop_instance_uid(obj);
    let fmt = PixelFormat::read(obj, &uid)?;
    let ts_uid = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
    if !is_jpeg_ls(&ts_uid) {
        return Err(ImagingError::UnsupportedPixelData { sop_instance_uid: uid, reason: format!("transfer syntax {ts_uid} is not JPEG-LS") });
    }
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(ImagingError::MissingAttribute { sop_instance_uid: uid, attribute: "PixelData (7FE0,0010)" });
    }
    let mut bytes = native_bytes(obj, &fmt, &uid, &ts_uid)?.0.into_owned();
    let elem = if fmt.bits_allocated == 8 {
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bytes.into()))
    } else {
        let words: Vec<u16> = bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(words.into()))
    };
    obj.put(elem);
    Ok(())
}

/// The Image Pixel module attributes we need.
#[derive(Debug, Clone)]
struct PixelFormat {
    rows: usize,
    cols: usize,
    frames: usize,
    samples: usize,
    bits_allocated: usize,
    bits_stored: usize,
    high_bit: usize,
    signed: bool,
    planar: bool,
    photometric: String,
}

impl PixelFormat {
    fn read(ds: &Ds, uid: &str) -> Result<Self> {
        let req = |tag: Tag, name: &'static str| -> Result<i64> {
            attrs::int(ds, tag).ok_or_else(|| ImagingError::MissingAttribute { sop_instance_uid: uid.to_string(), attribute: name })
        };
        let invalid = |name: &'static str, reason: String| ImagingError::InvalidAttribute { sop_instance_uid: uid.to_string(), attribute: name, reason };
        let rows = req(tags::ROWS, "Rows (0028,0010)")?;
        let cols = req(tags::COLUMNS, "Columns (0028,0011)")?;
        if rows <= 0 || cols <= 0 {
            return Err(invalid("Rows/Columns", format!("{rows} x {cols}")));
        }
        let bits_allocated = req(tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)")?;
        let bits_stored = attrs::int(ds, tags::BITS_STORED).unwrap_or(bits_allocated);
        let high_bit = attrs::int(ds, tags::HIGH_BIT).unwrap_or(bits_stored - 1);
        let samples = attrs::int(ds, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
        let photometric = attrs::string(ds, tags::PHOTOMETRIC_INTERPRETATION).map(|s| s.to_ascii_uppercase()).unwrap_or_else(|| {
            if samples == 3 {
                "RGB".into()
            } else {
                "MONOCHROME2".into()
            }
        });
        let unsupported = |reason: String| ImagingError::UnsupportedPixelData { sop_instance_uid: uid.to_string(), reason };
        if !matches!(bits_allocated, 1 | 8 | 16 | 32) {
            return Err(unsupported(format!("Bits Allocated {bits_allocated} (1, 8, 16 or 32 are decoded)")));
        }
        if bits_stored < 1 || bits_stored > bits_allocated {
            return Err(invalid("Bits Stored (0028,0101)", format!("{bits_stored} with Bits Allocated {bits_allocated}")));
        }
        if high_bit < bits_stored - 1 || high_bit >= bits_allocated {
            return Err(invalid("High Bit (0028,0102)", format!("{high_bit} with Bits Stored {bits_stored}")));
        }
        if samples != 1 && samples != 3 {
            return Err(unsupported(format!("Samples per Pixel {samples} (1 or 3 are decoded)")));
        }
        Ok(PixelFormat {
            rows: rows as usize,
            cols: cols as usize,
            frames: attrs::number_of_frames(ds),
            samples: samples as usize,
            bits_allocated: bits_allocated as usize,
            bits_stored: bits_stored as usize,
            high_bit: high_bit as usize,
            signed: attrs::int(ds, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1,
            planar: attrs::int(ds, tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1,
            photometric,
        })
    }

    fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Bytes of one native frame in its stored layout.
    fn native_frame_bytes(&self, photometric: &str) -> usize {
        if self.bits_allocated == 1 {
            return (self.pixels() * self.samples).div_ceil(8);
        }
        let bytes = self.bits_allocated / 8;
        if photometric == "YBR_FULL_422" || photometric == "YBR_PARTIAL_422" {
            // two luminance samples share one Cb and one Cr
            self.pixels() * 2 * bytes
        } else {
            self.pixels() * self.samples * bytes
        }
    }

    /// Smallest and largest stored value.
    fn stored_range(&self) -> (f64, f64) {
        let bs = self.bits_stored as i32;
        if self.signed {
            (-(2f64.powi(bs - 1)), 2f64.powi(bs - 1) - 1.0)
        } else {
            (0.0, 2f64.powi(bs) - 1.0)
        }
    }
}

/// Pixel Data as native little-endian bytes of all frames (decompressed when
/// the transfer syntax is encapsulated), and the photometric interpretation
/// those bytes are in.
fn native_bytes<'a>(obj: &'a DefaultDicomObject, fmt: &PixelFormat, uid: &str, ts_uid: &str) -> Result<(Cow<'a, [u8]>, String)> {
    let unsupported = |reason: String| ImagingError::UnsupportedPixelData { sop_instance_uid: uid.to_string(), reason };
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| unsupported(format!("unknown transfer syntax {ts_uid}")))?;
    let ts_name = format!("{} ({})", ts.name(), ts_uid);
    let elem = obj.get(tags::PIXEL_DATA).expect("checked by the caller");

    match elem.value() {
        Value::Primitive(p) => {
            let big = ts.endianness() == Endianness::Big;
            Ok((primitive_le_bytes(p, big, fmt.bits_allocated), fmt.photometric.clone()))
        }
        Value::PixelSequence(seq) => {
            if ts_uid == "1.2.840.10008.1.2.1.98" {
                // Encapsulated Uncompressed Explicit VR Little Endian: one fragment per frame
                let data: Vec<u8> = seq.fragments().iter().flatten().copied().collect();
                return Ok((Cow::Owned(data), fmt.photometric.clone()));
            }
            if is_jpeg_ls(ts_uid) && !cfg!(feature = "charls") {
                return decode_jpeg_ls(seq.fragments(), fmt, uid, &ts_name).map(|data| (Cow::Owned(data), fmt.photometric.clone()));
            }
            if !ts.can_decode_all() {
                return Err(unsupported(format!("no decoder for transfer syntax {ts_name}")));
            }
            if ts_uid == "1.2.840.10008.1.2.5" && fmt.bits_allocated == 32 {
                // the RLE codec stops at 16 bits
                let data = decode_rle(seq.fragments(), fmt).map_err(|reason| ImagingError::Decode {
                    sop_instance_uid: uid.to_string(),
                    transfer_syntax: ts_name.clone(),
                    reason,
                })?;
                return Ok((Cow::Owned(data), fmt.photometric.clone()));
            }
            if fmt.bits_allocated == 1 || fmt.bits_allocated == 32 {
                return Err(unsupported(format!("Bits Allocated {} in {ts_name}", fmt.bits_allocated)));
            }
            if ts_uid == "1.2.840.10008.1.2.4.51" && fmt.bits_stored > 8 {
                return Err(unsupported(format!("{}-bit JPEG Extended (process 4): the JPEG codec decodes 8-bit only", fmt.bits_stored)));
            }
            if matches!(ts_uid, "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51") && fmt.samples == 3 && fmt.photometric == "RGB" {
                // the stored components are R, G, B: no YCbCr conversion, whatever the JPEG markers suggest
                let data = decode_jpeg_rgb(seq.fragments(), fmt.frames).map_err(|reason| ImagingError::Decode {
                    sop_instance_uid: uid.to_string(),
                    transfer_syntax: ts_name.clone(),
                    reason,
                })?;
                return Ok((Cow::Owned(data), "RGB".into()));
            }
            let decoded = obj.decode_pixel_data().map_err(|e| ImagingError::Decode {
                sop_instance_uid: uid.to_string(),
                transfer_syntax: ts_name.clone(),
                reason: crate::error_chain(&e),
            })?;
            let photometric = photometric_after_codec(ts_uid, &fmt.photometric, fmt.samples);
            Ok((Cow::Owned(decoded.into_data()), photometric))
        }
        Value::Sequence(_) => {
            Err(ImagingError::InvalidAttribute { sop_instance_uid: uid.to_string(), attribute: "PixelData (7FE0,0010)", reason: "is a sequence".into() })
        }
    }
}

/// JPEG-LS Lossless / Near-Lossless (PS3.5 A.4.3).
pub(crate) fn is_jpeg_ls(ts_uid: &str) -> bool {
    matches!(ts_uid, "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81")
}

/// JPEG-LS without CharLS: pure_jpegls decodes one component per frame (the
/// grey-scale images analyses read). Colour JPEG-LS needs the `charls` build,
/// and the error says so.
fn decode_jpeg_ls(fragments: &[Vec<u8>], fmt: &PixelFormat, uid: &str, ts_name: &str) -> Result<Vec<u8>> {
    if fmt.samples != 1 {
        return Err(ImagingError::CodecNotBuilt {
            sop_instance_uid: uid.to_string(),
            what: format!("{ts_name} with {} samples per pixel", fmt.samples),
            enable: CHARLS_HINT,
        });
    }
    let failed = |reason: String| ImagingError::Decode { sop_instance_uid: uid.to_string(), transfer_syntax: ts_name.to_string(), reason };
    if fmt.bits_allocated != 8 && fmt.bits_allocated != 16 {
        return Err(failed(format!("Bits Allocated {} (JPEG-LS is decoded into 8 or 16 bits)", fmt.bits_allocated)));
    }
    let streams = frame_streams(fragments, fmt.frames).map_err(failed)?;
    let mut out = Vec::with_capacity(fmt.frames * fmt.pixels() * fmt.bits_allocated / 8);
    for (i, stream) in streams.iter().enumerate() {
        // the decoder's sample arithmetic is not hardened against every hostile header
        let decoded = std::panic::catch_unwind(|| jpegls::decode(stream, fmt.cols as u32, fmt.rows as u32))
            .map_err(|_| failed(format!("frame {}: the JPEG-LS decoder gave up on a malformed stream", i + 1)))?
            .map_err(|e| failed(format!("frame {}: {e}", i + 1)))?;
        let samples = decoded.0;
        if samples.len() != fmt.pixels() {
            return Err(failed(format!("frame {}: {} samples for {} x {} pixels", i + 1, samples.len(), fmt.rows, fmt.cols)));
        }
        if fmt.bits_allocated == 8 {
            out.extend(samples.iter().map(|&v| v as u8));
        } else {
            out.extend(samples.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    Ok(out)
}

/// How to get CharLS into the build (colour JPEG-LS, JPEG-LS transcoding).
pub(crate) const CHARLS_HINT: &str = "rebuild with `cargo build --release --features charls` (needs cmake and a C++ compiler)";

/// One JPEG / JPEG-LS code stream per frame: one fragment each, or frames
/// spread over fragments, found by their start-of-image markers (FF D8
/// cannot occur inside entropy-coded data).
fn frame_streams(fragments: &[Vec<u8>], frames: usize) -> std::result::Result<Vec<Cow<'_, [u8]>>, String> {
    if fragments.len() == frames {
        return Ok(fragments.iter().map(|f| Cow::Borrowed(f.as_slice())).collect());
    }
    let all: Vec<u8> = fragments.iter().flatten().copied().collect();
    let starts: Vec<usize> = all.windows(2).enumerate().filter(|(_, w)| w == &[0xFF, 0xD8]).map(|(i, _)| i).collect();
    if starts.len() < frames {
        return Err(format!("{} start-of-image markers in {} fragments for {frames} frames", starts.len(), fragments.len()));
    }
    Ok((0..frames).map(|i| Cow::Owned(all[starts[i]..starts.get(i + 1).copied().unwrap_or(all.len())].to_vec())).collect())
}

/// RLE Lossless (PS3.5 Annex G), one fragment per frame: one segment per
/// byte of each sample, most significant byte first; output is native
/// little-endian, samples interleaved.
fn decode_rle(fragments: &[Vec<u8>], fmt: &PixelFormat) -> std::result::Result<Vec<u8>, String> {
    let bps = fmt.bits_allocated / 8;
    let px = fmt.pixels();
    let n_segments = bps * fmt.samples;
    if fragments.len() < fmt.frames {
        return Err(format!("{} fragments for {} frames", fragments.len(), fmt.frames));
    }
    let mut out = vec![0u8; fmt.frames * px * n_segments];
    for (f, frag) in fragments.iter().take(fmt.frames).enumerate() {
        if frag.len() < 64 {
            return Err(format!("frame {}: RLE header truncated", f + 1));
        }
        let word = |i: usize| u32::from_le_bytes([frag[4 * i], frag[4 * i + 1], frag[4 * i + 2], frag[4 * i + 3]]) as usize;
        if word(0) != n_segments {
            return Err(format!("frame {}: {} RLE segments, {n_segments} expected", f + 1, word(0)));
        }
        let frame_out = &mut out[f * px * n_segments..(f + 1) * px * n_segments];
        for seg in 0..n_segments {
            let start = word(seg + 1);
            let end = if seg + 1 < n_segments { word(seg + 2) } else { frag.len() };
            let src = frag.get(start..end.min(frag.len())).ok_or_else(|| format!("frame {}: bad RLE segment offset", f + 1))?;
            let (sample, byte_msb) = (seg / bps, seg % bps);
            let byte = bps - 1 - byte_msb;
            let mut p = 0usize;
            let mut i = 0usize;
            let mut put = |p: &mut usize, v: u8| {
                if *p < px {
                    frame_out[(*p * fmt.samples + sample) * bps + byte] = v;
                }
                *p += 1;
            };
            while i < src.len() && p < px {
                let h = src[i] as i8;
                i += 1;
                if h >= 0 {
                    let n = h as usize + 1;
                    for &v in src.get(i..(i + n).min(src.len())).unwrap_or(&[]) {
                        put(&mut p, v);
                    }
                    i += n;
                } else if h != -128 {
                    let n = (1 - h as isize) as usize;
                    let v = *src.get(i).ok_or_else(|| format!("frame {}: truncated RLE run", f + 1))?;
                    i += 1;
                    for _ in 0..n {
                        put(&mut p, v);
                    }
                }
            }
            if p < px {
                return Err(format!("frame {}: RLE segment {} decodes to {p} of {px} bytes", f + 1, seg + 1));
            }
        }
    }
    Ok(out)
}

/// JPEG baseline/extended frames decoded with no colour transform (DICOM
/// says the components are RGB; jpeg-decoder would otherwise convert from
/// YCbCr when no Adobe marker says not to).
fn decode_jpeg_rgb(fragments: &[Vec<u8>], frames: usize) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (i, stream) in frame_streams(fragments, frames)?.iter().enumerate() {
        let mut dec = jpeg_decoder::Decoder::new(std::io::Cursor::new(&stream[..]));
        // `RGB` interleaves the components as they are (`None` in jpeg-decoder 0.3 emits them planar)
        dec.set_color_transform(jpeg_decoder::ColorTransform::RGB);
        out.extend_from_slice(&dec.decode().map_err(|e| format!("frame {}: {e}", i + 1))?);
    }
    Ok(out)
}

/// The colour space of a codec's output. The JPEG codec converts YCbCr to
/// RGB; OpenJPEG undoes the JPEG 2000 component transform (ICT/RCT); RLE and
/// JPEG-LS leave the samples as they are.
fn photometric_after_codec(ts_uid: &str, photometric: &str, samples: usize) -> String {
    if samples != 3 {
        return photometric.to_string();
    }
    let jpeg = matches!(ts_uid, "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70");
    let j2k = matches!(
        ts_uid,
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" | "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203"
    );
    match photometric {
        "YBR_FULL" | "YBR_FULL_422" | "YBR_PARTIAL_420" | "YBR_PARTIAL_422" if jpeg => "RGB".into(),
        "YBR_ICT" | "YBR_RCT" if j2k => "RGB".into(),
        p => p.to_string(),
    }
}

/// Bytes of a native Pixel Data value in little-endian sample order.
/// dicom-object parses OW as u16 words in the host order, which is right for
/// 8 and 16 bit samples in either byte order; 32-bit samples read from a big
/// endian OW need their two words swapped, and OB in big endian is raw.
fn primitive_le_bytes(p: &PrimitiveValue, big_endian: bool, bits_allocated: usize) -> Cow<'_, [u8]> {
    let bytes = p.to_bytes();
    if !big_endian || bits_allocated < 16 {
        return bytes;
    }
    match p {
        PrimitiveValue::U8(_) => {
            let w = bits_allocated / 8;
            let mut v = bytes.into_owned();
            for chunk in v.chunks_exact_mut(w) {
                chunk.reverse();
            }
            Cow::Owned(v)
        }
        PrimitiveValue::U16(_) | PrimitiveValue::I16(_) if bits_allocated == 32 => {
            let mut v = bytes.into_owned();
            for chunk in v.chunks_exact_mut(4) {
                chunk.swap(0, 2);
                chunk.swap(1, 3);
            }
            Cow::Owned(v)
        }
        _ => bytes,
    }
}

/// Read one frame's stored values (as f64, exact) into `out`, samples
/// interleaved, whatever the planar configuration and chroma subsampling.
fn stored_values(fmt: &PixelFormat, photometric: &str, bytes: &[u8], frame: usize, out: &mut Vec<f64>) {
    out.clear();
    let n = fmt.pixels() * fmt.samples;
    let shift = (fmt.high_bit + 1 - fmt.bits_stored) as u32;
    let bs = fmt.bits_stored as u32;
    let mask: u64 = if bs >= 64 { u64::MAX } else { (1u64 << bs) - 1 };
    let to_value = |raw: u64| -> f64 {
        let v = (raw >> shift) & mask;
        if fmt.signed && bs > 0 && (v >> (bs - 1)) & 1 == 1 {
            (v as i64 - (1i64 << bs)) as f64
        } else {
            v as f64
        }
    };

    if fmt.bits_allocated == 1 {
        // bits run on across frames (no frame padding); LSB first
        let base = frame * n;
        for i in 0..n {
            let g = base + i;
            let bit = bytes.get(g / 8).map(|b| (b >> (g % 8)) & 1).unwrap_or(0);
            out.push(bit as f64);
        }
        return;
    }

    let bps = fmt.bits_allocated / 8;
    let frame_bytes = fmt.native_frame_bytes(photometric);
    let data = &bytes[frame * frame_bytes..(frame + 1) * frame_bytes];
    let raw = |i: usize| -> u64 {
        let o = i * bps;
        match bps {
            1 => data[o] as u64,
            2 => u16::from_le_bytes([data[o], data[o + 1]]) as u64,
            _ => u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) as u64,
        }
    };

    if photometric == "YBR_FULL_422" || photometric == "YBR_PARTIAL_422" {
        // Y0 Y1 Cb Cr per pair of pixels along a row
        out.resize(n, 0.0);
        for r in 0..fmt.rows {
            for c in 0..fmt.cols {
                let pair = (r * fmt.cols + c) / 2;
                let y = to_value(raw(pair * 4 + (c % 2)));
                let cb = to_value(raw(pair * 4 + 2));
                let cr = to_value(raw(pair * 4 + 3));
                let o = (r * fmt.cols + c) * 3;
                out[o] = y;
                out[o + 1] = cb;
                out[o + 2] = cr;
            }
        }
        return;
    }

    if fmt.samples > 1 && fmt.planar {
        let px = fmt.pixels();
        out.resize(n, 0.0);
        for s in 0..fmt.samples {
            for p in 0..px {
                out[p * fmt.samples + s] = to_value(raw(s * px + p));
            }
        }
        return;
    }
    out.extend((0..n).map(|i| to_value(raw(i))));
}

/// Per-frame rescale: functional groups first, then the top level, then RT
/// Dose's Dose Grid Scaling.
fn frame_rescales(ds: &Ds, frames: usize) -> Vec<Rescale> {
    let top_slope = attrs::float(ds, tags::RESCALE_SLOPE);
    let top_intercept = attrs::float(ds, tags::RESCALE_INTERCEPT);
    let dose_scaling = attrs::float(ds, tags::DOSE_GRID_SCALING);
    (0..frames)
        .map(|f| {
            let fg = attrs::functional_group(ds, f, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE);
            let slope = fg.and_then(|m| attrs::float(m, tags::RESCALE_SLOPE)).or(top_slope);
            let intercept = fg.and_then(|m| attrs::float(m, tags::RESCALE_INTERCEPT)).or(top_intercept);
            match (slope, intercept) {
                (None, None) => match dose_scaling {
                    Some(s) if s != 0.0 => Rescale { slope: s, intercept: 0.0 },
                    _ => Rescale::IDENTITY,
                },
                (s, i) => Rescale { slope: s.filter(|s| *s != 0.0).unwrap_or(1.0), intercept: i.unwrap_or(0.0) },
            }
        })
        .collect()
}

fn convert(obj: &DefaultDicomObject, fmt: &PixelFormat, uid: &str, bytes: &[u8], photometric: &str, color: ColorMode) -> Result<DecodedImage> {
    let unsupported = |reason: String| ImagingError::UnsupportedPixelData { sop_instance_uid: uid.to_string(), reason };
    let expect_samples = |n: usize| -> Result<()> {
        if fmt.samples == n {
            Ok(())
        } else {
            Err(unsupported(format!("{photometric} with Samples per Pixel {}", fmt.samples)))
        }
    };
    enum Kind {
        Mono { invert: bool },
        Rgb,
        Ybr,
        Palette(PaletteLut),
    }
    let kind = match photometric {
        "MONOCHROME2" => {
            expect_samples(1)?;
            Kind::Mono { invert: false }
        }
        "MONOCHROME1" => {
            expect_samples(1)?;
            Kind::Mono { invert: true }
        }
        "RGB" => {
            expect_samples(3)?;
            Kind::Rgb
        }
        "YBR_FULL" | "YBR_FULL_422" => {
            expect_samples(3)?;
            Kind::Ybr
        }
        "PALETTE COLOR" => {
            expect_samples(1)?;
            Kind::Palette(PaletteLut::read(obj, uid)?)
        }
        other => return Err(unsupported(format!("photometric interpretation {other}"))),
    };

    let frame_bytes = fmt.native_frame_bytes(photometric);
    let available = if fmt.bits_allocated == 1 { (bytes.len() * 8) / (fmt.pixels() * fmt.samples) } else { bytes.len() / frame_bytes };
    if available < fmt.frames {
        return Err(ImagingError::InvalidAttribute {
            sop_instance_uid: uid.to_string(),
            attribute: "PixelData (7FE0,0010)",
            reason: format!(
                "{} bytes hold {available} frame(s) of {} x {} x {} at {} bits; Number of Frames is {}",
                bytes.len(),
                fmt.rows,
                fmt.cols,
                fmt.samples,
                fmt.bits_allocated,
                fmt.frames
            ),
        });
    }

    let out_samples = match (&kind, color) {
        (Kind::Mono { .. }, _) | (_, ColorMode::Luminance) => 1,
        (_, ColorMode::Rgb) => 3,
    };
    let px = fmt.pixels();
    let mut data = Vec::with_capacity(fmt.frames * px * out_samples);
    let modality_lut = match kind {
        Kind::Mono { .. } => ModalityLut::read(obj, uid)?,
        _ => None,
    };
    let rescales = match kind {
        Kind::Mono { .. } if modality_lut.is_none() => frame_rescales(obj, fmt.frames),
        _ => vec![Rescale::IDENTITY; fmt.frames],
    };
    let (smin, smax) = fmt.stored_range();
    // YBR offset for the chroma samples
    let half = 2f64.powi(fmt.bits_stored as i32 - 1);
    let max_value = 2f64.powi(fmt.bits_stored as i32) - 1.0;
    let mut buf = Vec::new();
    for (f, &r) in rescales.iter().enumerate() {
        stored_values(fmt, photometric, bytes, f, &mut buf);
        match &kind {
            Kind::Mono { invert } if modality_lut.is_some() => {
                let lut = modality_lut.as_ref().expect("checked");
                let sum = if *invert { lut.min + lut.max } else { 0.0 };
                let sign = if *invert { -1.0 } else { 1.0 };
                data.extend(buf.iter().map(|&v| (sum + sign * lut.map(v)) as f32));
            }
            Kind::Mono { invert } => {
                if *invert {
                    let (a, b) = (r.apply(smin), r.apply(smax));
                    let sum = a + b;
                    data.extend(buf.iter().map(|&v| (sum - r.apply(v)) as f32));
                } else {
                    data.extend(buf.iter().map(|&v| r.apply(v) as f32));
                }
            }
            Kind::Rgb | Kind::Ybr | Kind::Palette(_) => {
                for p in 0..px {
                    let rgb = match &kind {
                        Kind::Palette(lut) => lut.map(buf[p]),
                        Kind::Rgb => [buf[3 * p], buf[3 * p + 1], buf[3 * p + 2]],
                        Kind::Ybr => {
                            let (y, cb, cr) = (buf[3 * p], buf[3 * p + 1] - half, buf[3 * p + 2] - half);
                            [
                                (y + 1.402 * cr).clamp(0.0, max_value),
                                (y - 0.344136 * cb - 0.714136 * cr).clamp(0.0, max_value),
                                (y + 1.772 * cb).clamp(0.0, max_value),
                            ]
                        }
                        Kind::Mono { .. } => unreachable!(),
                    };
                    match color {
                        ColorMode::Luminance => data.push((0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) as f32),
                        ColorMode::Rgb => data.extend(rgb.iter().map(|&v| v as f32)),
                    }
                }
            }
        }
    }

    Ok(DecodedImage {
        sop_instance_uid: uid.to_string(),
        sop_class_uid: attrs::string(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
        rows: fmt.rows,
        cols: fmt.cols,
        frames: fmt.frames,
        samples: out_samples,
        data,
        inverted_monochrome1: matches!(kind, Kind::Mono { invert: true }),
        photometric: fmt.photometric.clone(),
        rescale: rescales,
        modality_lut: modality_lut.is_some(),
    })
}

/// A Modality LUT Sequence (0028,3000) item: stored value -> output value.
#[derive(Debug, Clone)]
struct ModalityLut {
    first_mapped: f64,
    entries: Vec<f64>,
    min: f64,
    max: f64,
}

impl ModalityLut {
    fn read(ds: &Ds, uid: &str) -> Result<Option<Self>> {
        let Some(item) = attrs::first_item(ds, tags::MODALITY_LUT_SEQUENCE) else {
            return Ok(None);
        };
        let invalid = |attribute: &'static str, reason: String| ImagingError::InvalidAttribute { sop_instance_uid: uid.to_string(), attribute, reason };
        const DESC: &str = "Modality LUT Sequence > LUT Descriptor (0028,3002)";
        const DATA: &str = "Modality LUT Sequence > LUT Data (0028,3006)";
        let desc = attrs::floats(item, tags::LUT_DESCRIPTOR).ok_or_else(|| invalid(DESC, "missing or not numeric".into()))?;
        if desc.len() != 3 {
            return Err(invalid(DESC, format!("{} values, 3 expected", desc.len())));
        }
        let entries = if desc[0] == 0.0 { 65536 } else { desc[0] as usize };
        let bits = desc[2] as u32;
        let elem = item.get(tags::LUT_DATA).ok_or_else(|| invalid(DATA, "missing".into()))?;
        let values: Vec<f64> = match elem.value() {
            Value::Primitive(PrimitiveValue::U16(v)) => v.iter().map(|&x| x as f64).collect(),
            Value::Primitive(PrimitiveValue::U8(b)) if bits <= 8 => b.iter().map(|&x| x as f64).collect(),
            Value::Primitive(PrimitiveValue::U8(b)) => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as f64).collect(),
            _ => elem.to_multi_float64().map_err(|e| invalid(DATA, e.to_string()))?,
        };
        if values.len() < entries {
            return Err(invalid(DATA, format!("{} entries, descriptor says {entries}", values.len())));
        }
        let entries: Vec<f64> = values[..entries].to_vec();
        let min = entries.iter().copied().fold(f64::INFINITY, f64::min);
        let max = entries.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Ok(Some(ModalityLut { first_mapped: desc[1], entries, min, max }))
    }

    fn map(&self, v: f64) -> f64 {
        let i = (v - self.first_mapped).clamp(0.0, (self.entries.len() - 1) as f64) as usize;
        self.entries[i]
    }
}

/// Float Pixel Data (7FE0,0008) / Double Float Pixel Data (7FE0,0009):
/// values are taken as they are.
fn float_pixel_data(obj: &DefaultDicomObject, fmt: &PixelFormat, uid: &str) -> Result<Option<DecodedImage>> {
    let values: Vec<f32> = if let Some(e) = obj.get(tags::FLOAT_PIXEL_DATA) {
        e.to_multi_float32().map_err(|err| ImagingError::InvalidAttribute {
            sop_instance_uid: uid.to_string(),
            attribute: "FloatPixelData (7FE0,0008)",
            reason: err.to_string(),
        })?
    } else if let Some(e) = obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA) {
        e.to_multi_float64()
            .map_err(|err| ImagingError::InvalidAttribute {
                sop_instance_uid: uid.to_string(),
                attribute: "DoubleFloatPixelData (7FE0,0009)",
                reason: err.to_string(),
            })?
            .into_iter()
            .map(|v| v as f32)
            .collect()
    } else {
        return Ok(None);
    };
    if fmt.samples != 1 {
        return Err(ImagingError::UnsupportedPixelData {
            sop_instance_uid: uid.to_string(),
            reason: "float pixel data with more than one sample per pixel".into(),
        });
    }
    let n = fmt.frames * fmt.pixels();
    if values.len() < n {
        return Err(ImagingError::InvalidAttribute {
            sop_instance_uid: uid.to_string(),
            attribute: "FloatPixelData",
            reason: format!("{} values, {} expected", values.len(), n),
        });
    }
    Ok(Some(DecodedImage {
        sop_instance_uid: uid.to_string(),
        sop_class_uid: attrs::string(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
        rows: fmt.rows,
        cols: fmt.cols,
        frames: fmt.frames,
        samples: 1,
        data: values[..n].to_vec(),
        inverted_monochrome1: false,
        photometric: fmt.photometric.clone(),
        rescale: vec![Rescale::IDENTITY; fmt.frames],
        modality_lut: false,
    }))
}

/// The three palette colour LUTs of a PALETTE COLOR image.
#[derive(Debug, Clone)]
struct PaletteLut {
    first_mapped: f64,
    r: Vec<u16>,
    g: Vec<u16>,
    b: Vec<u16>,
}

impl PaletteLut {
    fn read(ds: &Ds, uid: &str) -> Result<Self> {
        let r = read_palette_channel(ds, uid, 0)?;
        let g = read_palette_channel(ds, uid, 1)?;
        let b = read_palette_channel(ds, uid, 2)?;
        Ok(PaletteLut { first_mapped: r.0, r: r.1, g: g.1, b: b.1 })
    }

    fn map(&self, v: f64) -> [f64; 3] {
        let at = |lut: &Vec<u16>| {
            let i = (v - self.first_mapped).clamp(0.0, (lut.len() - 1) as f64) as usize;
            lut[i] as f64
        };
        [at(&self.r), at(&self.g), at(&self.b)]
    }
}

/// Descriptor and expanded data of one palette channel (0 = red, 1 = green,
/// 2 = blue): (first mapped value, entries).
fn read_palette_channel(ds: &Ds, uid: &str, channel: usize) -> Result<(f64, Vec<u16>)> {
    const DESC: [(Tag, &str); 3] = [
        (tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, "Red Palette Color Lookup Table Descriptor (0028,1101)"),
        (tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, "Green Palette Color Lookup Table Descriptor (0028,1102)"),
        (tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, "Blue Palette Color Lookup Table Descriptor (0028,1103)"),
    ];
    const DATA: [(Tag, &str); 3] = [
        (tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, "Red Palette Color Lookup Table Data (0028,1201)"),
        (tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA, "Green Palette Color Lookup Table Data (0028,1202)"),
        (tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA, "Blue Palette Color Lookup Table Data (0028,1203)"),
    ];
    const SEGMENTED: [(Tag, &str); 3] = [
        (tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, "Segmented Red Palette Color Lookup Table Data (0028,1221)"),
        (tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA, "Segmented Green Palette Color Lookup Table Data (0028,1222)"),
        (tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA, "Segmented Blue Palette Color Lookup Table Data (0028,1223)"),
    ];
    let (desc_tag, desc_name) = DESC[channel];
    let invalid = |attribute: &'static str, reason: String| ImagingError::InvalidAttribute { sop_instance_uid: uid.to_string(), attribute, reason };

    if ds.get(desc_tag).is_none() {
        return Err(ImagingError::MissingAttribute { sop_instance_uid: uid.to_string(), attribute: desc_name });
    }
    // the first mapped value may be encoded as SS or US
    let desc: Vec<i64> = attrs::floats(ds, desc_tag).ok_or_else(|| invalid(desc_name, "not numeric".into()))?.iter().map(|v| *v as i64).collect();
    if desc.len() != 3 {
        return Err(invalid(desc_name, format!("{} values, 3 expected", desc.len())));
    }
    let entries = if desc[0] == 0 { 65536 } else { desc[0] as usize };
    let first_mapped = desc[1] as f64;
    let nominal_bits = desc[2];
    if nominal_bits != 8 && nominal_bits != 16 {
        return Err(invalid(desc_name, format!("{nominal_bits} bits per entry (8 or 16 expected)")));
    }

    let (data_tag, data_name) = DATA[channel];
    if let Some(e) = ds.get(data_tag) {
        let bytes = e.to_bytes().map_err(|err| invalid(data_name, err.to_string()))?;
        let lut: Vec<u16> = if bytes.len() >= 2 * entries {
            // 16-bit words: 16-bit entries, or 8-bit entries each in its own word
            let words: Vec<u16> = bytes.chunks_exact(2).take(entries).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            if nominal_bits == 8 && words.iter().any(|&w| w > 255) && words.iter().all(|&w| w & 0xFF == 0) {
                // 8-bit entries stored in the high byte of each word
                words.iter().map(|&w| w >> 8).collect()
            } else {
                words
            }
        } else if bytes.len() >= entries {
            // 8-bit entries packed two per word
            bytes[..entries].iter().map(|&b| b as u16).collect()
        } else {
            return Err(invalid(data_name, format!("{} bytes for {entries} entries", bytes.len())));
        };
        return Ok((first_mapped, lut));
    }

    let (seg_tag, seg_name) = SEGMENTED[channel];
    if let Some(e) = ds.get(seg_tag) {
        let bytes = e.to_bytes().map_err(|err| invalid(seg_name, err.to_string()))?;
        let words: Vec<u32> = if nominal_bits == 16 {
            bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect()
        } else {
            bytes.iter().map(|&b| b as u32).collect()
        };
        let mut lut = expand_segmented_lut(&words, nominal_bits as u32).map_err(|reason| invalid(seg_name, reason))?;
        if lut.is_empty() {
            return Err(invalid(seg_name, "no entries".into()));
        }
        lut.truncate(entries);
        return Ok((first_mapped, lut.into_iter().map(|v| v.min(u16::MAX as u32) as u16).collect()));
    }
    Err(ImagingError::MissingAttribute { sop_instance_uid: uid.to_string(), attribute: DATA[channel].1 })
}

/// Expand segmented palette LUT data (PS3.3 C.7.9.2): discrete (0), linear
/// (1) and indirect (2) segments.
pub(crate) fn expand_segmented_lut(data: &[u32], bits: u32) -> std::result::Result<Vec<u32>, String> {
    let mut lut: Vec<u32> = Vec::new();
    expand_segments(data, bits, &mut lut, usize::MAX, 0)?;
    Ok(lut)
}

fn expand_segments(data: &[u32], bits: u32, lut: &mut Vec<u32>, max_segments: usize, depth: u32) -> std::result::Result<(), String> {
    if depth > 4 {
        return Err("indirect segments nested too deeply".into());
    }
    let mut o = 0usize;
    let mut segments = 0usize;
    while o + 1 < data.len() && segments < max_segments {
        let opcode = data[o];
        let length = data[o + 1] as usize;
        o += 2;
        match opcode {
            0 => {
                let end = (o + length).min(data.len());
                lut.extend_from_slice(&data[o..end]);
                o = end;
            }
            1 => {
                let y0 = *lut.last().ok_or("a linear segment cannot come first")? as f64;
                let y1 = *data.get(o).ok_or("truncated linear segment")? as f64;
                o += 1;
                for i in 1..=length {
                    lut.push((y0 + (y1 - y0) * i as f64 / length as f64).round() as u32);
                }
            }
            2 => {
                if lut.is_empty() {
                    return Err("an indirect segment cannot come first".into());
                }
                // the offset (in words of the segmented data) is a 32-bit value
                // in two 16-bit words (least significant first), or four bytes for 8-bit data
                let offset = if bits == 16 {
                    let lo = *data.get(o).ok_or("truncated indirect segment")?;
                    let hi = *data.get(o + 1).ok_or("truncated indirect segment")?;
                    o += 2;
                    (lo | (hi << 16)) as usize
                } else {
                    let b: Vec<u32> = data.get(o..o + 4).ok_or("truncated indirect segment")?.to_vec();
                    o += 4;
                    (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) as usize
                };
                if offset >= data.len() {
                    return Err(format!("indirect segment offset {offset} beyond the data"));
                }
                expand_segments(&data[offset..], bits, lut, length, depth + 1)?;
            }
            other => return Err(format!("unknown segment opcode {other}")),
        }
        segments += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmented_lut_discrete_linear_indirect() {
        // discrete 0,10 ; linear to 50 over 4 ; indirect: repeat first segment once (offset 0)
        let data = [0, 2, 0, 10, 1, 4, 50, 2, 1, 0, 0];
        let lut = expand_segmented_lut(&data, 16).unwrap();
        assert_eq!(lut, vec![0, 10, 20, 30, 40, 50, 0, 10]);
    }

    fn palette_ds(desc: [u16; 3], data: PrimitiveValue) -> dicom_object::InMemDicomObject {
        use dicom_core::{DataElement, VR};
        let mut ds = dicom_object::InMemDicomObject::new_empty();
        for (d, t) in [
            (tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA),
            (tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA),
            (tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA),
        ] {
            ds.put(DataElement::new(d, VR::US, PrimitiveValue::from(desc)));
            ds.put(DataElement::new(t, VR::OW, data.clone()));
        }
        ds
    }

    #[test]
    fn palette_8bit_entries_packed_or_in_words() {
        let want = vec![0u16, 128, 255, 16];
        // 8-bit entries packed two per word (the standard's layout)
        let lut = PaletteLut::read(&palette_ds([4, 0, 8], PrimitiveValue::U8([0u8, 128, 255, 16][..].into())), "x").unwrap();
        assert_eq!(lut.r, want);
        // each 8-bit entry in its own 16-bit word, low byte
        let lut = PaletteLut::read(&palette_ds([4, 0, 8], PrimitiveValue::U16([0u16, 128, 255, 16][..].into())), "x").unwrap();
        assert_eq!(lut.g, want);
        // ... or high byte
        let lut = PaletteLut::read(&palette_ds([4, 0, 8], PrimitiveValue::U16([0u16, 0x8000, 0xFF00, 0x1000][..].into())), "x").unwrap();
        assert_eq!(lut.b, want);
        // values below the first mapped value take the first entry, above the last the last
        let lut = PaletteLut::read(&palette_ds([4, 10, 16], PrimitiveValue::U16([0u16, 1000, 2000, 65535][..].into())), "x").unwrap();
        assert_eq!(lut.map(3.0), [0.0; 3]);
        assert_eq!(lut.map(11.0), [1000.0; 3]);
        assert_eq!(lut.map(400.0), [65535.0; 3]);
        // too little data is an error naming the attribute
        let err = PaletteLut::read(&palette_ds([4, 0, 16], PrimitiveValue::U8([1u8, 2][..].into())), "1.2.3").unwrap_err();
        assert!(err.to_string().contains("1.2.3") && err.to_string().contains("(0028,1201)"), "{err}");
    }

    #[test]
    fn segmented_lut_linear_first_is_an_error() {
        assert!(expand_segmented_lut(&[1, 3, 9], 16).is_err());
    }

    #[test]
    fn stored_values_mask_and_sign() {
        // 12 bits stored in 16, signed: 0x0FFF = -1, 0xF800 has garbage in the high nibble -> 0x800 = -2048
        let fmt = PixelFormat {
            rows: 1,
            cols: 3,
            frames: 1,
            samples: 1,
            bits_allocated: 16,
            bits_stored: 12,
            high_bit: 11,
            signed: true,
            planar: false,
            photometric: "MONOCHROME2".into(),
        };
        let bytes: Vec<u8> = [0x0FFFu16, 0xF800, 0x0123].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        stored_values(&fmt, "MONOCHROME2", &bytes, 0, &mut out);
        assert_eq!(out, vec![-1.0, -2048.0, 291.0]);
    }

    #[test]
    fn stored_values_planar_and_422() {
        let mut fmt = PixelFormat {
            rows: 1,
            cols: 2,
            frames: 1,
            samples: 3,
            bits_allocated: 8,
            bits_stored: 8,
            high_bit: 7,
            signed: false,
            planar: true,
            photometric: "RGB".into(),
        };
        let mut out = Vec::new();
        stored_values(&fmt, "RGB", &[1, 2, 3, 4, 5, 6], 0, &mut out);
        assert_eq!(out, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        fmt.planar = false;
        stored_values(&fmt, "YBR_FULL_422", &[10, 20, 128, 129], 0, &mut out);
        assert_eq!(out, vec![10.0, 128.0, 129.0, 20.0, 128.0, 129.0]);
    }

    #[test]
    fn one_bit_frames_run_on() {
        // 3x3 = 9 pixels per frame, 2 frames: bits run across the byte boundary
        let fmt = PixelFormat {
            rows: 3,
            cols: 3,
            frames: 2,
            samples: 1,
            bits_allocated: 1,
            bits_stored: 1,
            high_bit: 0,
            signed: false,
            planar: false,
            photometric: "MONOCHROME2".into(),
        };
        // frame 0: only pixel 0 set; frame 1: only pixel 8 set (global bit 17)
        let bytes = [0b0000_0001u8, 0, 0b0000_0010];
        let mut out = Vec::new();
        stored_values(&fmt, "MONOCHROME2", &bytes, 0, &mut out);
        assert_eq!(out, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        stored_values(&fmt, "MONOCHROME2", &bytes, 1, &mut out);
        assert_eq!(out, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    }
}
