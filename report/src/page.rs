//! The HTML page: a template with four slots (style, ECharts, data,
//! script), filled from files compiled into the binary.
//!
//! Invariants: the data is JSON inside `<script type="application/json">`
//! with every `<` written as `\u003c`, so no value (a variant id, a reason
//! a module wrote) can close the script element or inject markup; the page
//! names no external resource.

use crate::ReportError;
use crate::figures::Figures;

const TEMPLATE: &str = include_str!("../assets/page.html");
const STYLE: &str = include_str!("../assets/report.css");
const SCRIPT: &str = include_str!("../assets/report.js");
const ECHARTS: &str = include_str!("../vendor/echarts/echarts.min.js");

/// The slots of the template, in the order they appear.
const SLOTS: [&str; 4] = ["/*STYLE*/", "/*ECHARTS*/", "/*DATA*/", "/*SCRIPT*/"];

/// The report page of `figures`.
pub fn render(figures: &Figures) -> Result<String, ReportError> {
    let data = serde_json::to_string(figures)
        .map_err(ReportError::Json)?
        .replace('<', "\\u003c");
    let fills = [STYLE, ECHARTS, data.as_str(), SCRIPT];
    let mut out = String::with_capacity(TEMPLATE.len() + ECHARTS.len() + data.len() + 65_536);
    let mut rest = TEMPLATE;
    for (slot, fill) in SLOTS.iter().zip(fills) {
        // The template is part of this crate, and a test checks each slot
        // is in it once, in order.
        let Some((before, after)) = rest.split_once(slot) else {
            continue;
        };
        out.push_str(before);
        out.push_str(fill);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_in_the_template_once_and_in_order() {
        let mut at = 0;
        for slot in SLOTS {
            assert_eq!(TEMPLATE.matches(slot).count(), 1, "{slot}");
            let here = TEMPLATE.find(slot).unwrap();
            assert!(here >= at, "{slot} out of order");
            at = here;
        }
    }

    /// A run id, variant id or reason is text a module or a user chose: one
    /// that tries to close the data block and add a script stays data.
    #[test]
    fn hostile_text_in_the_data_cannot_leave_the_data_block() {
        let hostile = "</script><script>alert(1)</script><!--";
        let mut f = crate::figures(&crate::RunData::default(), &Default::default());
        f.meta.run = hostile.into();
        f.meta.warnings.push(hostile.into());
        let page = render(&f).unwrap();
        assert!(!page.contains("alert(1)</script>"), "the script got out");
        let start = page.find(r#"id="garden-data">"#).unwrap() + r#"id="garden-data">"#.len();
        let len = page[start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&page[start..start + len]).unwrap();
        assert_eq!(data["meta"]["run"], hostile, "and reads back as it was");
        let ours = [TEMPLATE, ECHARTS, SCRIPT, STYLE]
            .iter()
            .map(|t| t.matches("<script").count())
            .sum::<usize>();
        assert_eq!(
            page.matches("<script").count(),
            ours,
            "no script element from the data"
        );
    }

    #[test]
    fn the_page_names_no_outside_resource() {
        for text in [TEMPLATE, STYLE, SCRIPT] {
            for outside in ["http://", "https://", "src=\"//", "@import"] {
                assert!(!text.contains(outside), "{outside}");
            }
        }
    }
}
