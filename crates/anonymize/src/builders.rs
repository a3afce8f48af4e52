//! Hierarchy builders for the usual kinds of quasi-identifier, producing the rows of an ARX
//! hierarchy (leaf first, `*` last) from the distinct values found in the data:
//! - intervals for numbers (ages, lab values), with nested widths;
//! - dates, day → month → year → decade;
//! - masking of trailing characters (postal codes, institution codes);
//! - ordered categories grouped in consecutive runs (e.g. prefectures by JIS code order).
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

/// Numeric intervals: level j puts v in [⌊v/wⱼ⌋·wⱼ, … + wⱼ). Widths must increase and each
/// divide the next, so that the levels nest. Whole numbers with whole widths are labelled
/// `30-39`; otherwise `[5.5,6)`.
pub fn intervals(column: &str, values: &[String], widths: &[f64]) -> Result<Hierarchy, AnonError> {
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

/// Dates `YYYY-MM-DD` → `YYYY-MM` → `YYYY` → `1990s` → `*`.
pub fn dates(column: &str, values: &[String]) -> Result<Hierarchy, AnonError> {
    let mut rows = Vec::with_capacity(values.len());
    for v in values {
        let b = v.as_bytes();
        let ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !ok {
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
