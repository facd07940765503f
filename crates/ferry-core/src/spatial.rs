//! Spatial values between engines. Pure.
//!
//! ferry carries a geometry as [`Value::Native`](crate::Value::Native) with the type name
//! [`TYPE_NAME`] and, as text, the geometry's hex EWKB: what PostGIS prints and reads (the
//! SRID inside, uppercase hex). A connector whose server stores geometries another way
//! converts at its edge. MySQL and MariaDB store a 4-byte little-endian SRID followed by the
//! WKB; [`ewkb_hex_from_mysql`] and [`mysql_from_ewkb_hex`] turn one into the other without
//! losing a byte (the WKB is kept as it is, byte order included).

/// The type name of a spatial [`crate::Value::Native`].
pub const TYPE_NAME: &str = "geometry";

/// The EWKB flag saying an SRID follows the type.
const SRID_FLAG: u32 = 0x2000_0000;
/// The EWKB flags of a geometry with Z or M coordinates.
const Z_FLAG: u32 = 0x8000_0000;
const M_FLAG: u32 = 0x4000_0000;

/// The largest SRID PostGIS keeps as it is (a larger one is silently moved into its reserved
/// range): a geometry with a larger SRID is not turned into EWKB.
pub const MAX_SRID: u32 = 999_999;

/// The hex EWKB of a geometry in MySQL's storage form (SRID, then WKB). An SRID of 0 gives
/// plain WKB, as PostGIS writes it. A value that is not a geometry (MySQL keeps an empty one
/// written in non-strict mode) or whose SRID is above [`MAX_SRID`] is an error: the caller
/// keeps it as bytes.
pub fn ewkb_hex_from_mysql(stored: &[u8]) -> Result<String, String> {
    if stored.len() < 9 {
        return Err(format!(
            "a MySQL geometry of {} bytes is too short (4 bytes of SRID, then WKB)",
            stored.len()
        ));
    }
    let srid = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if srid > MAX_SRID {
        return Err(format!(
            "SRID {srid} is above {MAX_SRID}, the largest PostGIS keeps"
        ));
    }
    let wkb = &stored[4..];
    let little = byte_order(wkb)?;
    let kind = read_u32(&wkb[1..5], little);
    let mut ewkb = Vec::with_capacity(wkb.len() + 4);
    ewkb.push(wkb[0]);
    if srid == 0 {
        ewkb.extend_from_slice(&wkb[1..]);
    } else {
        ewkb.extend_from_slice(&write_u32(kind | SRID_FLAG, little));
        ewkb.extend_from_slice(&write_u32(srid, little));
        ewkb.extend_from_slice(&wkb[5..]);
    }
    Ok(hex(&ewkb))
}

/// MySQL's storage form (SRID, then WKB) of a geometry given as hex EWKB (or hex WKB, SRID 0).
/// A geometry with Z or M coordinates has no MySQL form.
pub fn mysql_from_ewkb_hex(text: &str) -> Result<Vec<u8>, String> {
    let ewkb = unhex(text).ok_or_else(|| format!("'{}' is not hex EWKB", preview(text)))?;
    if ewkb.len() < 5 {
        return Err(format!("'{}' is too short for a geometry", preview(text)));
    }
    let little = byte_order(&ewkb)?;
    let kind = read_u32(&ewkb[1..5], little);
    if kind & (Z_FLAG | M_FLAG) != 0 || (kind & 0xFFFF) > 1000 {
        return Err(
            "a geometry with Z or M coordinates cannot be stored in MySQL or MariaDB (2D only)"
                .to_string(),
        );
    }
    if !(1..=7).contains(&(kind & 0xFFFF)) {
        return Err(format!(
            "geometry type {} (a curve, surface or other PostGIS extension) cannot be stored in MySQL or MariaDB",
            kind & 0xFFFF
        ));
    }
    let (srid, body) = if kind & SRID_FLAG != 0 {
        if ewkb.len() < 9 {
            return Err(format!("'{}' is too short for its SRID", preview(text)));
        }
        (read_u32(&ewkb[5..9], little), &ewkb[9..])
    } else {
        (0, &ewkb[5..])
    };
    // POINT EMPTY is written as a point of NaN coordinates, which MySQL has no form for.
    if kind & 0xFFFF == 1 && body.len() == 16 {
        let x = f64::from_bits(u64::from_le_bytes(body[..8].try_into().unwrap_or_default()));
        let x = if little {
            x
        } else {
            f64::from_bits(u64::from_be_bytes(body[..8].try_into().unwrap_or_default()))
        };
        if x.is_nan() {
            return Err("POINT EMPTY cannot be stored in MySQL or MariaDB".to_string());
        }
    }
    let mut stored = Vec::with_capacity(ewkb.len());
    stored.extend_from_slice(&srid.to_le_bytes());
    stored.push(ewkb[0]);
    stored.extend_from_slice(&write_u32(kind & !SRID_FLAG, little));
    stored.extend_from_slice(body);
    Ok(stored)
}

fn byte_order(wkb: &[u8]) -> Result<bool, String> {
    match wkb.first() {
        Some(1) if wkb.len() >= 5 => Ok(true),
        Some(0) if wkb.len() >= 5 => Ok(false),
        _ => Err("not WKB (the first byte gives the byte order: 0 or 1)".to_string()),
    }
}

fn read_u32(bytes: &[u8], little: bool) -> u32 {
    let array = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if little {
        u32::from_le_bytes(array)
    } else {
        u32::from_be_bytes(array)
    }
}

fn write_u32(value: u32, little: bool) -> [u8; 4] {
    if little {
        value.to_le_bytes()
    } else {
        value.to_be_bytes()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 15)] as char);
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).ok())
        .collect()
}

fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// POINT(1 2) with SRID 4326 as MySQL stores it.
    fn mysql_point() -> Vec<u8> {
        let mut stored = 4326u32.to_le_bytes().to_vec();
        stored.push(1);
        stored.extend_from_slice(&1u32.to_le_bytes());
        stored.extend_from_slice(&1.0f64.to_le_bytes());
        stored.extend_from_slice(&2.0f64.to_le_bytes());
        stored
    }

    #[test]
    fn a_mysql_point_becomes_the_ewkb_postgis_prints_and_back() {
        let ewkb = ewkb_hex_from_mysql(&mysql_point()).unwrap();
        // SELECT 'SRID=4326;POINT(1 2)'::geometry in PostGIS.
        assert_eq!(ewkb, "0101000020E6100000000000000000F03F0000000000000040");
        assert_eq!(mysql_from_ewkb_hex(&ewkb).unwrap(), mysql_point());
        assert_eq!(
            mysql_from_ewkb_hex(&ewkb.to_lowercase()).unwrap(),
            mysql_point()
        );
    }

    #[test]
    fn srid_zero_is_plain_wkb_and_big_endian_wkb_is_kept() {
        let mut stored = mysql_point();
        stored[..4].copy_from_slice(&0u32.to_le_bytes());
        let ewkb = ewkb_hex_from_mysql(&stored).unwrap();
        assert_eq!(ewkb, "0101000000000000000000F03F0000000000000040");
        assert_eq!(mysql_from_ewkb_hex(&ewkb).unwrap(), stored);
        // A big-endian WKB (byte order 0) keeps its order both ways.
        let mut big = 7u32.to_le_bytes().to_vec();
        big.push(0);
        big.extend_from_slice(&1u32.to_be_bytes());
        big.extend_from_slice(&1.5f64.to_be_bytes());
        big.extend_from_slice(&(-2.0f64).to_be_bytes());
        let ewkb = ewkb_hex_from_mysql(&big).unwrap();
        assert!(ewkb.starts_with("002000000100000007"), "{ewkb}");
        assert_eq!(mysql_from_ewkb_hex(&ewkb).unwrap(), big);
    }

    #[test]
    fn what_mysql_cannot_hold_is_refused() {
        // SELECT 'POINT Z (1 2 3)'::geometry.
        let error =
            mysql_from_ewkb_hex("0101000080000000000000F03F00000000000000400000000000000840")
                .unwrap_err();
        assert!(error.contains("Z or M"), "{error}");
        assert!(mysql_from_ewkb_hex("zz").is_err());
        // SELECT 'POINT EMPTY'::geometry; SELECT 'CIRCULARSTRING(0 0,1 1,2 0)'::geometry.
        assert!(mysql_from_ewkb_hex("0101000000000000000000F87F000000000000F87F").is_err());
        assert!(mysql_from_ewkb_hex(
            "01080000000300000000000000000000000000000000000000000000000000F03F000000000000F03F00000000000000400000000000000000"
        )
        .is_err());
        let mut large = 1_000_000u32.to_le_bytes().to_vec();
        large.extend_from_slice(&mysql_point()[4..]);
        assert!(ewkb_hex_from_mysql(&large).is_err());
        assert!(ewkb_hex_from_mysql(&[]).is_err());
        assert!(mysql_from_ewkb_hex("01").is_err());
        assert!(ewkb_hex_from_mysql(&[0, 0, 0, 0, 1]).is_err());
        assert!(ewkb_hex_from_mysql(&[0, 0, 0, 0, 7, 1, 0, 0, 0]).is_err());
    }
}
