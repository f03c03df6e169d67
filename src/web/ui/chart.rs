//! Bar charts drawn on the server as SVG (no script, no framework): one bar per day, the chart
//! named by its `<title>` for screen readers (SVG 1.1 §5.4, WAI-ARIA `role="img"`); the page
//! shows the same numbers in a table beside it.

use std::fmt::Write;

/// The drawing's size in user units; the CSS scales it to the page's width.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
/// Room under the bars for the first and last day's labels.
const AXIS: f64 = 16.0;

/// One bar: its label (a day, as the page's language writes it) and its value.
pub struct Bar {
    /// What the bar is of.
    pub label: String,
    /// Its height, in the chart's unit.
    pub value: i64,
    /// The value as the page's language writes it.
    pub value_text: String,
}

/// XML text with `&`, `<`, `>` and quotes escaped (labels come from catalogues and data).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG bar chart titled `title` with element id `id`, bars left to right; each bar carries
/// its own `<title>` (label: value) as a tooltip.
pub fn bars(id: &str, title: &str, bars: &[Bar]) -> String {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1) as f64;
    let slot = WIDTH / bars.len().max(1) as f64;
    let plot = HEIGHT - AXIS;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="{id}" class="chart" role="img" aria-labelledby="{id}-title" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none"><title id="{id}-title">{}</title>"#,
        escape(title)
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="0" y1="{plot}" x2="{WIDTH}" y2="{plot}"/>"#
    );
    for (k, b) in bars.iter().enumerate() {
        let h = (b.value.max(0) as f64 / max) * (plot - 2.0);
        let x = k as f64 * slot + slot * 0.1;
        let _ = write!(
            svg,
            r#"<rect class="chart-bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" data-value="{}"><title>{}: {}</title></rect>"#,
            plot - h,
            slot * 0.8,
            b.value,
            escape(&b.label),
            escape(&b.value_text)
        );
    }
    if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
        let _ = write!(
            svg,
            r#"<text class="tick" x="0" y="{HEIGHT}" text-anchor="start">{}</text><text class="tick" x="{WIDTH}" y="{HEIGHT}" text-anchor="end">{}</text>"#,
            escape(&first.label),
            escape(&last.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, value: i64) -> Bar {
        Bar {
            label: label.into(),
            value,
            value_text: value.to_string(),
        }
    }

    #[test]
    fn a_chart_has_its_title_and_one_bar_per_value_scaled_to_the_largest() {
        let svg = bars(
            "c",
            "Received <per day>",
            &[bar("a", 0), bar("b", 4), bar("c", 2)],
        );
        assert!(svg.contains("<title id=\"c-title\">Received &lt;per day&gt;</title>"));
        assert_eq!(svg.matches("<rect class=\"chart-bar\"").count(), 3);
        assert!(svg.contains("height=\"102.0\" data-value=\"4\""), "{svg}");
        assert!(svg.contains("height=\"51.0\" data-value=\"2\""), "{svg}");
        assert!(svg.contains("height=\"0.0\" data-value=\"0\""), "{svg}");
    }

    #[test]
    fn an_empty_chart_is_still_a_titled_drawing() {
        let svg = bars("e", "Nothing", &[]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<rect"));
    }
}
