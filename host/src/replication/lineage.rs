//! Reading lineage: the family tree of a variant as text, and the whole
//! lineage as CSV (JSON is `serde_json` of the records).

use std::fmt::Write as _;

use super::LineageRecord;

/// The variant with the best in-sample fitness among those alive at the
/// cut; if none reached it, the best latest fitness.
pub fn best(records: &[LineageRecord]) -> Option<&LineageRecord> {
    let by = |key: fn(&LineageRecord) -> Option<f64>| {
        records
            .iter()
            .filter_map(|r| key(r).map(|k| (r, k)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.id.cmp(&a.0.id)))
            .map(|(r, _)| r)
    };
    by(|r| r.in_sample).or_else(|| by(|r| r.fitness.last().map(|f| f.1)))
}

fn line(r: &LineageRecord) -> String {
    let genes: Vec<String> = r
        .genes
        .iter()
        .map(|(k, v)| format!("{k}={}", short(*v)))
        .collect();
    let fit = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    let life = match (&r.death_bar, &r.death_cause) {
        (Some(b), Some(c)) => format!("bars {}..{b}, died: {c}", r.birth_bar),
        _ => format!("bars {}.., alive", r.birth_bar),
    };
    format!(
        "{} (gen {}, {}; IS {} OOS {}; {life}) [{}]",
        r.id,
        r.generation,
        r.birth_cause.as_str(),
        fit(r.in_sample),
        fit(r.out_of_sample),
        genes.join(" ")
    )
}

fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// The family tree of `id`: its ancestors down to it (first parents form
/// the trunk, second parents are shown beside), then its descendants.
pub fn tree(records: &[LineageRecord], id: &str) -> String {
    let find = |x: &str| records.iter().find(|r| r.id == x);
    let mut trunk = Vec::new();
    let mut at = find(id);
    while let Some(r) = at {
        if trunk.iter().any(|t: &&LineageRecord| t.id == r.id) {
            break;
        }
        trunk.push(r);
        at = r.parents.first().and_then(|p| find(p));
    }
    trunk.reverse();
    let mut out = String::new();
    for (depth, r) in trunk.iter().enumerate() {
        let indent = "   ".repeat(depth);
        let mark = if r.id == id { " ★" } else { "" };
        let branch = if depth == 0 { "" } else { "└─ " };
        let _ = writeln!(out, "{indent}{branch}{}{mark}", line(r));
        for other in r.parents.iter().skip(1) {
            let _ = writeln!(
                out,
                "{indent}   × crossed with {}",
                find(other).map_or_else(|| other.clone(), line)
            );
        }
    }
    let depth = trunk.len();
    descendants(records, id, depth, &mut out);
    out
}

fn descendants(records: &[LineageRecord], id: &str, depth: usize, out: &mut String) {
    for child in records
        .iter()
        .filter(|r| r.parents.first().is_some_and(|p| p == id))
    {
        let _ = writeln!(out, "{}└─ {}", "   ".repeat(depth), line(child));
        if depth < 12 {
            descendants(records, &child.id, depth + 1, out);
        }
    }
}

/// Every record as CSV (genes as `name=value` joined by `;`).
pub fn csv(records: &[LineageRecord]) -> String {
    let mut out = String::from(
        "id,parents,component,blob,generation,birth_bar,death_bar,birth_cause,death_cause,in_sample,out_of_sample,control,genes\n",
    );
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for r in records {
        let genes: Vec<String> = r.genes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let opt = |x: Option<f64>| x.map_or_else(String::new, |v| v.to_string());
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            quote(&r.id),
            quote(&r.parents.join(";")),
            r.component,
            r.blob,
            r.generation,
            r.birth_bar,
            r.death_bar.map_or_else(String::new, |b| b.to_string()),
            r.birth_cause.as_str(),
            quote(r.death_cause.as_deref().unwrap_or("")),
            opt(r.in_sample),
            opt(r.out_of_sample),
            r.control,
            quote(&genes.join(";"))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::BirthCause;

    fn rec(id: &str, parents: &[&str], generation: u32, is: Option<f64>) -> LineageRecord {
        LineageRecord {
            id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            component: "c".into(),
            blob: "b".into(),
            genes: vec![("fast".into(), 10.0)],
            generation,
            birth_bar: generation as usize * 100,
            death_bar: None,
            birth_cause: if parents.is_empty() {
                BirthCause::Initial
            } else {
                BirthCause::Generation
            },
            death_cause: None,
            fitness: vec![],
            in_sample: is,
            out_of_sample: None,
            control: false,
            fitness_by_label: vec![],
            code_changes: Vec::new(),
        }
    }

    #[test]
    fn tree_shows_ancestry_with_crossings_and_descendants() {
        let records = vec![
            rec("a.0", &[], 0, Some(0.1)),
            rec("a.1", &[], 0, Some(0.2)),
            rec("a.2", &["a.0", "a.1"], 1, Some(0.5)),
            rec("a.3", &["a.2"], 2, Some(2.0)),
            rec("a.4", &["a.3"], 3, None),
        ];
        assert_eq!(best(&records).map(|r| r.id.as_str()), Some("a.3"));
        let t = tree(&records, "a.3");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("a.0"), "{t}");
        assert!(lines[1].contains("└─ a.2"), "{t}");
        assert!(
            lines[2].contains("crossed with a.1"),
            "a.2's second parent: {t}"
        );
        assert!(
            lines.iter().any(|l| l.contains("a.3") && l.contains('★')),
            "{t}"
        );
        assert!(
            lines.last().is_some_and(|l| l.contains("a.4")),
            "descendants follow: {t}"
        );
    }

    #[test]
    fn csv_has_a_row_per_record() {
        let records = vec![rec("a.0", &[], 0, None), rec("a.1", &["a.0"], 1, Some(1.0))];
        let c = csv(&records);
        assert_eq!(c.lines().count(), 3);
        assert!(
            c.lines()
                .nth(2)
                .is_some_and(|l| l.starts_with("\"a.1\",\"a.0\""))
        );
    }
}
