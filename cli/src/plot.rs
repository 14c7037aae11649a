//! `cohort plot`: a metric's curve in the terminal, drawn with Braille dots (2x4 per cell),
//! one series per trial (coloured when stdout is a terminal).

use std::fmt::Write as _;

use cohort_catalog::format_number;
use cohort_catalog::read::Point;

const COLORS: [&str; 6] = [
    "\x1b[34m", "\x1b[31m", "\x1b[32m", "\x1b[35m", "\x1b[33m", "\x1b[36m",
];
const MARKS: [char; 6] = ['*', '+', 'o', 'x', '#', '%'];

/// Draws `series` (label, points) in `width` x `height` character cells.
pub(crate) fn chart(
    title: &str,
    series: &[(String, Vec<Point>)],
    width: usize,
    height: usize,
    color: bool,
) -> String {
    let finite = || {
        series
            .iter()
            .flat_map(|(_, points)| points.iter())
            .filter(|p| p.value.is_finite())
    };
    let mut out = format!("{title}\n");
    let (Some(x0), Some(x1)) = (
        finite().map(|p| p.step).min(),
        finite().map(|p| p.step).max(),
    ) else {
        out.push_str("(no finite values to plot)\n");
        return out;
    };
    let y0 = finite().map(|p| p.value).fold(f64::INFINITY, f64::min);
    let y1 = finite().map(|p| p.value).fold(f64::NEG_INFINITY, f64::max);
    let (y0, y1) = if y1 > y0 {
        (y0, y1)
    } else {
        (y0 - 0.5, y1 + 0.5)
    };
    let x_span = (x1 - x0).max(1) as f64;
    // Without colour, several series are told apart by a mark per cell instead of Braille dots.
    let marks = !color && series.len() > 1;
    let (dots_w, dots_h) = if marks {
        (width, height)
    } else {
        (width * 2, height * 4)
    };
    // Per cell: the Braille bits and which series drew last.
    let mut cells = vec![(0u8, usize::MAX); width * height];
    // The best series (first) is drawn last, so it stays visible where curves overlap.
    for (index, (_, points)) in series.iter().enumerate().rev() {
        let mut previous: Option<(usize, usize)> = None;
        for p in points.iter().filter(|p| p.value.is_finite()) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let dx = (((p.step - x0) as f64 / x_span) * (dots_w - 1) as f64).round() as usize;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let dy = (((y1 - p.value) / (y1 - y0)) * (dots_h - 1) as f64).round() as usize;
            // Join consecutive points with a line so sparse curves read as curves.
            let (fx, fy) = previous.unwrap_or((dx, dy));
            let steps = fx.abs_diff(dx).max(fy.abs_diff(dy)).max(1);
            for s in 0..=steps {
                let t = s as f64 / steps as f64;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let x = (fx as f64 + (dx as f64 - fx as f64) * t).round() as usize;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let y = (fy as f64 + (dy as f64 - fy as f64) * t).round() as usize;
                if marks {
                    cells[y * width + x] = (1, index);
                    continue;
                }
                let cell = &mut cells[(y / 4) * width + x / 2];
                // Braille dot numbering: columns of 1,2,3,7 and 4,5,6,8.
                let bit = match (x % 2, y % 4) {
                    (0, 0) => 0x01,
                    (0, 1) => 0x02,
                    (0, 2) => 0x04,
                    (0, _) => 0x40,
                    (_, 0) => 0x08,
                    (_, 1) => 0x10,
                    (_, 2) => 0x20,
                    _ => 0x80,
                };
                cell.0 |= bit;
                cell.1 = index;
            }
            previous = Some((dx, dy));
        }
    }
    let labels = [
        format_number(y1),
        format_number((y0 + y1) / 2.0),
        format_number(y0),
    ];
    let label_width = labels.iter().map(String::len).max().unwrap_or(1);
    for row in 0..height {
        let label = match row {
            0 => labels[0].as_str(),
            r if r == height / 2 => labels[1].as_str(),
            r if r == height - 1 => labels[2].as_str(),
            _ => "",
        };
        let _ = write!(out, "{label:>label_width$} ┤");
        for col in 0..width {
            let (bits, owner) = cells[row * width + col];
            if bits == 0 {
                out.push(' ');
                continue;
            }
            let glyph = if marks {
                MARKS[owner % MARKS.len()]
            } else {
                char::from_u32(0x2800 + u32::from(bits)).unwrap_or('?')
            };
            if color {
                let _ = write!(out, "{}{glyph}\x1b[0m", COLORS[owner % COLORS.len()]);
            } else {
                out.push(glyph);
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{:>label_width$} └{}", "", "─".repeat(width));
    let left = format!("step {x0}");
    let right = x1.to_string();
    let _ = writeln!(
        out,
        "{:>label_width$}  {left}{:>pad$}",
        "",
        right,
        pad = width.saturating_sub(left.len())
    );
    if series.len() > 1 || !color {
        for (index, (label, _)) in series.iter().enumerate() {
            if color {
                let _ = writeln!(out, "  {}⣿\x1b[0m {label}", COLORS[index % COLORS.len()]);
            } else if marks {
                let _ = writeln!(out, "  {} {label}", MARKS[index % MARKS.len()]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_falling_curve_starts_top_left_and_ends_bottom_right() {
        let points: Vec<Point> = (0..100)
            .map(|s| Point {
                step: s,
                value: 1.0 / (1.0 + s as f64),
                wall: 0.0,
            })
            .collect();
        let text = chart("loss", &[("t".into(), points)], 40, 10, false);
        let rows: Vec<&str> = text.lines().skip(1).take(10).collect();
        let first = rows[0].split('┤').nth(1).unwrap();
        let last = rows[9].split('┤').nth(1).unwrap();
        assert!(first.starts_with(|c: char| c != ' '), "{text}");
        assert!(last.trim_end().len() > first.trim_end().len(), "{text}");
        assert!(text.contains("step 0"));
        assert!(rows[0].trim_start().starts_with('1'), "{text}");
    }

    #[test]
    fn nothing_finite_says_so() {
        let points = vec![Point {
            step: 0,
            value: f64::NAN,
            wall: 0.0,
        }];
        assert!(chart("x", &[("t".into(), points)], 10, 4, false).contains("no finite values"));
    }
}
