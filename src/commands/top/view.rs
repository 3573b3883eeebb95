//! The screen: one table row per component, a title with the pipeline's balance, and a
//! footer with the keys, the sort and the filter.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table};

use super::rows::{Row, SortBy, by_reason};

/// What the screen shows besides the rows.
pub struct Status<'a> {
    pub url: &'a str,
    pub sort: SortBy,
    pub filter: &'a str,
    /// `Some` while the filter is being typed.
    pub editing: Option<&'a str>,
    /// The last fetch's error, if it failed.
    pub error: Option<&'a str>,
    pub balanced: bool,
}

/// Bytes per second, short (`1.2M` is 1.2 MiB/s); empty when nothing was counted.
fn byte_rate(value: f64) -> String {
    match value {
        v if v <= 0.0 => String::new(),
        v if v >= 1024.0 * 1024.0 => format!("{:.1}M", v / (1024.0 * 1024.0)),
        v if v >= 1024.0 => format!("{:.1}k", v / 1024.0),
        v => format!("{v:.0}"),
    }
}

fn rate(value: f64) -> String {
    if value >= 1_000_000.0 {
        format!("{:.1}M", value / 1_000_000.0)
    } else if value >= 10_000.0 {
        format!("{:.1}k", value / 1_000.0)
    } else {
        format!("{value:.0}")
    }
}

pub fn draw(frame: &mut Frame, rows: &[Row], status: &Status<'_>) {
    let [table_area, footer_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    let title = match (status.error, status.balanced) {
        (Some(error), _) => format!(" sluice top · {} · {error} ", status.url),
        (None, true) => format!(" sluice top · {} · ledger balanced ", status.url),
        (None, false) => format!(" sluice top · {} · LEDGER NOT BALANCED ", status.url),
    };
    let header = TableRow::new(
        [
            "ID",
            "KIND",
            "TYPE",
            "IN/S",
            "OUT/S",
            "B IN/S",
            "B OUT/S",
            "ERRORS",
            "DISCARDED",
            "DEAD-LETTERED",
            "BUFFER",
            "DLQ",
            "STATE",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    let lines = rows.iter().map(|r| {
        let errors = if r.errored > 0 {
            format!("{} failed; {}", r.errored, by_reason(&r.errors))
        } else {
            by_reason(&r.errors)
        };
        let buffer = match (&r.buffer, r.buffer_fill) {
            (Some(text), Some(fill)) => format!("{:.0}% {text}", fill * 100.0),
            (Some(text), None) => text.clone(),
            _ => String::new(),
        };
        let state = match (r.stalled, r.balanced) {
            (true, _) => "stalled",
            (false, false) => "unbalanced",
            (false, true) => "ok",
        };
        let style = if r.stalled || !r.balanced {
            Style::default().fg(Color::Red)
        } else if r.dead_lettered_total() > 0 || r.errors_total() > 0 {
            Style::default().fg(Color::Yellow)
        } else {
            Style::default()
        };
        TableRow::new([
            r.id.clone(),
            r.kind.clone(),
            r.component_type.clone(),
            rate(r.events_in_per_sec),
            rate(r.events_out_per_sec),
            byte_rate(r.bytes_in_per_sec),
            byte_rate(r.bytes_out_per_sec),
            errors,
            by_reason(&r.discarded),
            by_reason(&r.dead_lettered),
            buffer,
            r.dead_letter_queue_events.map(|n| n.to_string()).unwrap_or_default(),
            state.to_owned(),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Min(12),
        Constraint::Length(9),
        Constraint::Length(13),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Length(17),
        Constraint::Length(7),
        Constraint::Length(10),
    ];
    let table = Table::new(lines, widths).header(header).block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(table, table_area);
    let footer = match status.editing {
        Some(text) => format!(" filter: {text}_   (Enter to apply, Esc to cancel)"),
        None => format!(
            " q quit · s sort ({:?}) · / filter{} ",
            status.sort,
            if status.filter.is_empty() { String::new() } else { format!(" ({})", status.filter) }
        ),
    };
    frame.render_widget(Paragraph::new(Line::from(footer)), footer_area);
}
