//! Codes drawn as QR images: SVG by the `qrcode` crate, PNG from its
//! modules through the `png` encoder (no image library).

use qrcode::{Color, EcLevel, QrCode, render::svg};

use crate::ticket::{domain::QrFormat, ports::QrImages};

/// Pixels per module of a PNG.
const PNG_SCALE: usize = 8;
/// The quiet zone around the code, in modules (ISO/IEC 18004 asks for 4).
const QUIET_ZONE: usize = 4;

#[derive(Clone, Default)]
pub struct QrRenderer;

impl QrImages for QrRenderer {
    fn draw(&self, code: &str, format: QrFormat) -> anyhow::Result<Vec<u8>> {
        // Medium error correction: a scuffed phone screen still scans.
        let qr = QrCode::with_error_correction_level(code, EcLevel::M)?;
        Ok(match format {
            QrFormat::Svg => qr
                .render::<svg::Color>()
                .min_dimensions(256, 256)
                .build()
                .into_bytes(),
            QrFormat::Png => png(&qr)?,
        })
    }
}

/// An 8-bit greyscale PNG: each module a square of dark or light pixels,
/// inside the quiet zone.
fn png(qr: &QrCode) -> anyhow::Result<Vec<u8>> {
    let modules = qr.width();
    let colors = qr.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![u8::MAX; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (row, column) = (index / modules + QUIET_ZONE, index % modules + QUIET_ZONE);
        for y in row * PNG_SCALE..(row + 1) * PNG_SCALE {
            pixels[y * side + column * PNG_SCALE..y * side + (column + 1) * PNG_SCALE].fill(0);
        }
    }
    let mut out = Vec::new();
    let side = u32::try_from(side)?;
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "eyJhbGciOiJFZERTQSJ9.eyJ0aWQiOjd9.c2lnbmF0dXJl";

    #[test]
    fn an_svg_is_an_svg_document() {
        let svg = QrRenderer.draw(CODE, QrFormat::Svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
    }

    #[test]
    fn a_png_has_the_signature_and_the_code_s_modules() {
        let png = QrRenderer.draw(CODE, QrFormat::Png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        let modules = QrCode::with_error_correction_level(CODE, EcLevel::M)
            .unwrap()
            .width();
        assert_eq!(info.width as usize, (modules + 8) * PNG_SCALE);
        assert_eq!(info.width, info.height);
    }
}
