//! Hierarchy builders for the usual kinds of quasi-identifier, producing the rows of an ARX
//! hierarchy (leaf first, `*` last) from the distinct values found in the data:
//! - intervals for numbers (ages, lab values), with nested widths;
//! - dates, day → month → year → decade;
//! - masking of trailing characters (postal codes, institution codes);
//! - ordered categories grouped in consecutive runs (e.g. prefectures by JIS code order);
//! - ICD-10 codes, code → 3-character category → chapter.
//!
//! Every builder's output goes through [`Hierarchy::from_rows`], so it is validated like a
//! file written by hand.

use crate::error::AnonError;
use crate::hierarchy::Hierarchy;

fn bad(column: &str, msg: String) -> AnonError {
    AnonError::Config(format!("hierarchy for {column}: {msg}"))
}

fn finish(column: &str, mut rows: Vec<Vec<String>>) -> Result<Hierarchy, AnonError> {
    for r in rows.iter_mut() {
        r.push("*".to_owned());
    }
    Hierarchy::from_rows(column, rows)
}

/// Checks interval widths: at least one, positive, each dividing the next (so the levels
/// of [`intervals`] nest).
pub fn check_widths(column: &str, widths: &[f64]) -> Result<(), AnonError> {
    if widths.is_empty() {
        return Err(bad(column, "give at least one interval width".into()));
    }
    for w in widths.windows(2) {
        let ratio = w[1] / w[0];
        if w[1] <= w[0] || (ratio - ratio.round()).abs() > 1e-9 {
            return Err(bad(
                column,
                format!(
                    "width {} does not nest in {} (each must divide the next)",
                    w[0], w[1]
                ),
            ));
        }
    }
    if widths.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return Err(bad(column, "interval widths must be positive".into()));
    }
    Ok(())
}

/// Numeric intervals: level j puts v in [⌊v/wⱼ⌋·wⱼ, … + wⱼ). Widths must increase and each
/// divide the next, so that the levels nest. Whole numbers with whole widths are labelled
/// `30-39`; otherwise `[5.5,6)`.
pub fn intervals(column: &str, values: &[String], widths: &[f64]) -> Result<Hierarchy, AnonError> {
    check_widths(column, widths)?;
    let whole = widths.iter().all(|w| w.fract() == 0.0);
    let mut rows = Vec::with_capacity(values.len());
    for v in values {
        let x: f64 = v
            .trim()
            .parse()
            .map_err(|_| bad(column, format!("value {v:?} is not a number")))?;
        if !x.is_finite() {
            return Err(bad(column, format!("value {v:?} is not a finite number")));
        }
        let integral = whole && x.fract() == 0.0;
        let mut row = vec![v.clone()];
        for &w in widths {
            let lo = (x / w).floor() * w;
            row.push(if integral {
                format!("{}-{}", lo as i64, (lo + w) as i64 - 1)
            } else {
                format!("[{},{})", trim(lo), trim(lo + w))
            });
        }
        rows.push(row);
    }
    finish(column, rows)
}

fn trim(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Whether `v` has the form `YYYY-MM-DD` (digits and dashes; the calendar is not checked).
pub fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Dates `YYYY-MM-DD` → `YYYY-MM` → `YYYY` → `1990s` → `*`.
pub fn dates(column: &str, values: &[String]) -> Result<Hierarchy, AnonError> {
    let mut rows = Vec::with_capacity(values.len());
    for v in values {
        if !is_date(v) {
            return Err(bad(column, format!("value {v:?} is not a date YYYY-MM-DD")));
        }
        rows.push(vec![
            v.clone(),
            v[..7].to_owned(),
            v[..4].to_owned(),
            format!("{}0s", &v[..3]),
        ]);
    }
    finish(column, rows)
}

/// Trailing characters masked with `*`: level j masks the last `counts[j]` characters
/// (increasing). Values must all have the same length, so that masks nest.
pub fn masking(column: &str, values: &[String], counts: &[usize]) -> Result<Hierarchy, AnonError> {
    if counts.is_empty() || counts.windows(2).any(|w| w[1] <= w[0]) {
        return Err(bad(column, "mask counts must be given and increase".into()));
    }
    let len = values.first().map_or(0, |v| v.chars().count());
    let mut rows = Vec::with_capacity(values.len());
    for v in values {
        let chars: Vec<char> = v.chars().collect();
        if chars.len() != len {
            return Err(bad(
                column,
                format!("value {v:?} has {} characters, others {len}", chars.len()),
            ));
        }
        let mut row = vec![v.clone()];
        for &n in counts {
            let keep = len.saturating_sub(n);
            let mut s: String = chars[..keep].iter().collect();
            s.extend(std::iter::repeat_n('*', len - keep));
            row.push(s);
        }
        rows.push(row);
    }
    finish(column, rows)
}

/// Ordered categories grouped in consecutive runs: level j groups `sizes[j]` categories of
/// `order` (sizes increasing, each dividing the next). Labels are `first–last` of the group.
/// Every value must be in `order`.
pub fn ordered(
    column: &str,
    values: &[String],
    order: &[String],
    sizes: &[usize],
) -> Result<Hierarchy, AnonError> {
    if sizes.is_empty()
        || sizes[0] == 0
        || sizes.windows(2).any(|w| w[1] <= w[0] || w[1] % w[0] != 0)
    {
        return Err(bad(
            column,
            "group sizes must be given, increase, and each divide the next".into(),
        ));
    }
    let mut rows = Vec::with_capacity(values.len());
    for v in values {
        let pos = order
            .iter()
            .position(|o| o == v)
            .ok_or_else(|| bad(column, format!("value {v:?} is not in the given order")))?;
        let mut row = vec![v.clone()];
        for &n in sizes {
            let start = pos / n * n;
            let end = (start + n).min(order.len()) - 1;
            row.push(format!("{}–{}", order[start], order[end]));
        }
        rows.push(row);
    }
    finish(column, rows)
}

/// ICD-10 chapters (WHO ICD-10 2019): first and last category of each, and the numeral.
const ICD10_CHAPTERS: [(&str, &str, &str); 22] = [
    ("A00", "B99", "I"),
    ("C00", "D48", "II"),
    ("D50", "D89", "III"),
    ("E00", "E90", "IV"),
    ("F00", "F99", "V"),
    ("G00", "G99", "VI"),
    ("H00", "H59", "VII"),
    ("H60", "H95", "VIII"),
    ("I00", "I99", "IX"),
    ("J00", "J99", "X"),
    ("K00", "K93", "XI"),
    ("L00", "L99", "XII"),
    ("M00", "M99", "XIII"),
    ("N00", "N99", "XIV"),
    ("O00", "O99", "XV"),
    ("P00", "P96", "XVI"),
    ("Q00", "Q99", "XVII"),
    ("R00", "R99", "XVIII"),
    ("S00", "T98", "XIX"),
    ("U00", "U85", "XXII"),
    ("V01", "Y98", "XX"),
    ("Z00", "Z99", "XXI"),
];

/// ICD-10 codes (`E11.9`, `E119`, `C61`) → 3-character category (`E11`) → chapter
/// (`IV E00–E90`) → `*`. A code outside every chapter is refused.
pub fn icd10(column: &str, values: &[String]) -> Result<Hierarchy, AnonError> {
    let mut rows = Vec::with_capacity(values.len());
    for v in values {
        let b = v.as_bytes();
        let rest = b.get(3..).unwrap_or_default();
        let rest = rest.strip_prefix(b".").unwrap_or(rest);
        let ok = b.len() >= 3
            && b[0].is_ascii_uppercase()
            && b[1].is_ascii_digit()
            && b[2].is_ascii_alphanumeric()
            && rest.len() <= 2
            && rest.iter().all(u8::is_ascii_alphanumeric)
            && !(b.len() > 3 && rest.is_empty());
        if !ok {
            return Err(bad(column, format!("value {v:?} is not an ICD-10 code")));
        }
        let category = &v[..3];
        let Some((from, to, numeral)) = ICD10_CHAPTERS
            .iter()
            .find(|(from, to, _)| (*from..=*to).contains(&category))
        else {
            return Err(bad(column, format!("code {v:?} is in no ICD-10 chapter")));
        };
        rows.push(vec![
            v.clone(),
            category.to_owned(),
            format!("{numeral} {from}–{to}"),
        ]);
    }
    finish(column, rows)
}

/// The rows of `h` as an ARX hierarchy file (`;`-separated, no header).
pub fn to_arx_csv(h: &Hierarchy) -> Result<String, AnonError> {
    let mut out = String::new();
    for leaf in 0..h.leaves() as u32 {
        let cells: Vec<&str> = (0..h.height())
            .map(|level| h.value(level, h.code(leaf, level)))
            .collect();
        if cells.iter().any(|c| c.contains(';') || c.contains('\n')) {
            return Err(bad(
                h.column(),
                "a value contains ';' or a line break, which the ARX format cannot hold".into(),
            ));
        }
        out.push_str(&cells.join(";"));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn intervals_nest_and_label() {
        let h = intervals("age", &s(&["3", "34", "67"]), &[5.0, 10.0, 20.0]).expect("ok");
        assert_eq!(h.height(), 5);
        let leaf = h.leaf("34").expect("leaf");
        assert_eq!(h.value(1, h.code(leaf, 1)), "30-34");
        assert_eq!(h.value(2, h.code(leaf, 2)), "30-39");
        assert_eq!(h.value(3, h.code(leaf, 3)), "20-39");
        assert_eq!(h.value(4, h.code(leaf, 4)), "*");
        let lab = intervals("hba1c", &s(&["5.4", "6.1"]), &[0.5, 1.0]).expect("ok");
        let l = lab.leaf("5.4").expect("leaf");
        assert_eq!(lab.value(1, lab.code(l, 1)), "[5,5.5)");
        assert!(intervals("a", &s(&["1"]), &[5.0, 7.0]).is_err());
        assert!(intervals("a", &s(&["x"]), &[5.0]).is_err());
    }

    #[test]
    fn icd10_codes_go_to_category_then_chapter() {
        let h = icd10("dx", &s(&["E11.9", "E119", "C61", "S93.4", "U07.1", "I10"])).expect("ok");
        let labels = |v: &str| -> Vec<String> {
            let l = h.leaf(v).expect("leaf");
            (0..h.height())
                .map(|j| h.value(j, h.code(l, j)).to_owned())
                .collect()
        };
        assert_eq!(labels("E11.9"), ["E11.9", "E11", "IV E00–E90", "*"]);
        assert_eq!(labels("E119"), ["E119", "E11", "IV E00–E90", "*"]);
        assert_eq!(labels("C61"), ["C61", "C61", "II C00–D48", "*"]);
        assert_eq!(labels("S93.4"), ["S93.4", "S93", "XIX S00–T98", "*"]);
        assert_eq!(labels("U07.1"), ["U07.1", "U07", "XXII U00–U85", "*"]);
        for bad in ["e11", "E1", "E11.", "E11.123", "11.9", "U99", "E95"] {
            assert!(icd10("dx", &s(&[bad])).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn dates_masks_and_orders() {
        let d = dates("birth", &s(&["1991-03-18", "1959-03-26"])).expect("ok");
        let l = d.leaf("1991-03-18").expect("leaf");
        let labels: Vec<&str> = (0..d.height()).map(|j| d.value(j, d.code(l, j))).collect();
        assert_eq!(labels, ["1991-03-18", "1991-03", "1991", "1990s", "*"]);
        assert!(dates("birth", &s(&["1991/03/18"])).is_err());

        let m = masking("zip", &s(&["9012202", "9012999"]), &[1, 3]).expect("ok");
        let l = m.leaf("9012202").expect("leaf");
        assert_eq!(m.value(2, m.code(l, 2)), "9012***");
        assert!(masking("zip", &s(&["901", "9012"]), &[1]).is_err());

        let order = s(&["北海道", "青森県", "岩手県", "宮城県"]);
        let o = ordered("pref", &s(&["岩手県", "北海道"]), &order, &[2, 4]).expect("ok");
        let l = o.leaf("岩手県").expect("leaf");
        assert_eq!(o.value(1, o.code(l, 1)), "岩手県–宮城県");
        assert_eq!(o.value(2, o.code(l, 2)), "北海道–宮城県");
        let csv = to_arx_csv(&o).expect("csv");
        assert_eq!(
            csv.lines().next(),
            Some("岩手県;岩手県–宮城県;北海道–宮城県;*")
        );
        assert!(ordered("pref", &s(&["沖縄県"]), &order, &[2]).is_err());
    }
}
