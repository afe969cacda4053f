//! Statistics and formatting: median, percentiles, ratios, and the text and Markdown tables.

use std::fmt::Write as _;

/// The median (the mean of the middle two for an even count).
pub(super) fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The nearest-rank percentile: the smallest value with at least `p`% of the values at or below it.
pub(super) fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// `ours ÷ reference`, as `0.45×`.
pub(super) fn ratio(ours: Option<f64>, reference: Option<f64>) -> String {
    match (ours, reference) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// `median (p90)` in ms.
pub(super) fn med_p90(xs: &[f64]) -> String {
    match (median(xs), percentile(xs, 90.0)) {
        (Some(m), Some(p)) => format!("{m:.1} ({p:.1})"),
        _ => "–".into(),
    }
}

pub(super) fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A table printed as aligned text or as Markdown; the first column is left-aligned, the
/// others right-aligned.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) head: Vec<String>,
    pub(super) rows: Vec<Vec<String>>,
    /// Columns aligned left besides the first.
    pub(super) left: Vec<usize>,
}

impl Table {
    pub(super) fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            left: Vec::new(),
        }
    }

    /// Aligns column `i` left, as text.
    pub(super) fn left(mut self, i: usize) -> Table {
        self.left.push(i);
        self
    }

    fn is_left(&self, i: usize) -> bool {
        i == 0 || self.left.contains(&i)
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    pub(super) fn text(&self) -> String {
        let w = self.widths();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, width) in w.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = " ".repeat(width - c.chars().count().min(*width));
                if i > 0 {
                    s.push_str("  ");
                }
                if self.is_left(i) {
                    s.push_str(c);
                    s.push_str(&pad);
                } else {
                    s.push_str(&pad);
                    s.push_str(c);
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&self.head);
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }

    pub(super) fn markdown(&self) -> String {
        let cell = |c: &str| c.replace('|', "\\|");
        let mut out = String::from("|");
        for h in &self.head {
            let _ = write!(out, " {} |", cell(h));
        }
        out.push_str("\n|");
        for i in 0..self.head.len() {
            out.push_str(if self.is_left(i) { "---|" } else { "---:|" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push('|');
            for i in 0..self.head.len() {
                let _ = write!(
                    out,
                    " {} |",
                    cell(r.get(i).map(String::as_str).unwrap_or(""))
                );
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentile() {
        let check = |xs: &[f64], med: Option<f64>, p90: Option<f64>| {
            assert_eq!(median(xs), med, "median of {xs:?}");
            assert_eq!(percentile(xs, 90.0), p90, "p90 of {xs:?}");
        };
        check(&[], None, None);
        check(&[5.0], Some(5.0), Some(5.0));
        check(&[3.0, 1.0], Some(2.0), Some(3.0));
        check(&[9.0, 1.0, 5.0], Some(5.0), Some(9.0));
        let ten: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        check(&ten, Some(5.5), Some(9.0));
        let thirty: Vec<f64> = (1..=30).map(f64::from).collect();
        check(&thirty, Some(15.5), Some(27.0));
        assert_eq!(percentile(&thirty, 100.0), Some(30.0));
        assert_eq!(percentile(&thirty, 0.0), Some(1.0));
    }

    #[test]
    fn ratios_and_numbers() {
        assert_eq!(ratio(Some(15.0), Some(33.0)), "0.45×");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "–");
        assert_eq!(ratio(None, Some(3.0)), "–");
        assert_eq!(med_p90(&[2.0, 3.0, 4.0]), "3.0 (4.0)");
        assert_eq!(med_p90(&[]), "–");
        assert_eq!(mib(1372), "1.34 MiB");
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1406656, "1,406,656"),
            (7733752, "7,733,752"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }

    #[test]
    fn tables() {
        let mut t = Table::new(&["name", "ms", "ratio"]);
        t.row(vec![
            "--net=host true".into(),
            "15.0 (17.0)".into(),
            "0.45×".into(),
        ]);
        t.row(vec!["a|b".into(), "2.0 (3.0)".into()]);
        assert_eq!(
            t.text(),
            "name                      ms  ratio\n\
             --net=host true  15.0 (17.0)  0.45×\n\
             a|b                2.0 (3.0)\n"
        );
        assert_eq!(
            t.markdown(),
            "| name | ms | ratio |\n\
             |---|---:|---:|\n\
             | --net=host true | 15.0 (17.0) | 0.45× |\n\
             | a\\|b | 2.0 (3.0) |  |\n"
        );

        let mut t = Table::new(&["target", "measured", "verdict"]).left(2);
        t.row(vec!["rss".into(), "1.47 MiB".into(), "not met".into()]);
        t.row(vec!["startup".into(), "0.25×".into(), "met".into()]);
        assert_eq!(
            t.text(),
            "target   measured  verdict\n\
             rss      1.47 MiB  not met\n\
             startup     0.25×  met\n"
        );
        assert!(
            t.markdown()
                .starts_with("| target | measured | verdict |\n|---|---:|---|\n")
        );
    }
}
