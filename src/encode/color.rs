//! sRGB to the DICOM CIELab encoding (Recommended Display CIELab Value).
//!
//! Same arithmetic as PixelMed's ColorUtilities and highdicom's
//! `CIELabColor.from_rgb`: sRGB -> linear -> XYZ (D65) -> L*a*b*, then L*
//! 0..100 and a*, b* -128..127 scaled to 0..65535.

/// The three unsigned 16-bit values of (0062,000D).
pub fn rgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        100.0 * if c > 0.04045 { ((c + 0.055) / 1.055).powf(2.4) } else { c / 12.92 }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = r * 0.4124 + g * 0.3576 + b * 0.1805;
    let y = r * 0.2126 + g * 0.7152 + b * 0.0722;
    let z = r * 0.0193 + g * 0.1192 + b * 0.9505;
    let f = |c: f64| if c >= 8.856_451_679_035_63e-3 { c.cbrt() } else { (841.0 / 108.0) * c + 4.0 / 29.0 };
    let (fx, fy, fz) = (f(x / 95.047), f(y / 100.0), f(z / 108.883));
    let l = (116.0 * fy - 16.0).clamp(0.0, 100.0);
    let a = (500.0 * (fx - fy)).clamp(-128.0, 127.0);
    let bb = (200.0 * (fy - fz)).clamp(-128.0, 127.0);
    [(l * 65535.0 / 100.0).round() as u16, ((a + 128.0) * 65535.0 / 255.0).round() as u16, ((bb + 128.0) * 65535.0 / 255.0).round() as u16]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_highdicom() {
        // highdicom 0.28 CIELabColor.from_rgb(...).value
        let cases: [([u8; 3], [u16; 3]); 7] = [
            ([255, 0, 0], [34886, 53484, 50172]),
            ([0, 255, 0], [57498, 10747, 54274]),
            ([0, 0, 255], [21170, 53250, 5175]),
            ([255, 255, 255], [65535, 32897, 32893]),
            ([0, 0, 0], [0, 32896, 32896]),
            ([128, 174, 128], [43803, 26565, 37722]),
            ([221, 130, 101], [41661, 41167, 40792]),
        ];
        for (rgb, want) in cases {
            let got = rgb_to_dicom_lab(rgb);
            for k in 0..3 {
                assert!((got[k] as i32 - want[k] as i32).abs() <= 1, "{rgb:?}: {got:?} vs {want:?}");
            }
        }
    }
}
