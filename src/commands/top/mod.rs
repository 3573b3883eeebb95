//! `sluice top`: a terminal view of a running sluice, over its API (`GET /ledger`): per
//! component the events per second in and out, errors, discards and dead-lettered events by
//! reason, buffer fill, disk DLQ depth, stalled state and whether its ledger balances.
//! `--json` prints one sample (two reads `--interval` apart, for the rates) and exits.

mod rows;
mod view;

use std::io::Write;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use serde_json::Value;

pub use rows::SortBy;

use crate::cli::TopArgs;

pub fn run(args: &TopArgs) -> u8 {
    let interval = Duration::from_millis(args.interval.max(100));
    if args.json {
        return one_shot(args, interval);
    }
    let mut terminal = ratatui::init();
    let result = interactive(&mut terminal, args, interval);
    ratatui::restore();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn one_shot(args: &TopArgs, interval: Duration) -> u8 {
    let first = match fetch(&args.url) {
        Ok(first) => first,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let started = Instant::now();
    std::thread::sleep(interval);
    let second = match fetch(&args.url) {
        Ok(second) => second,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut rows = rows::rows(Some(&first), &second, started.elapsed());
    rows.retain(|r| rows::matches(args.filter.as_deref().unwrap_or(""), &r.id));
    args.sort.apply(&mut rows);
    let out = serde_json::json!({ "balanced": second["balanced"], "components": rows });
    let _ = writeln!(std::io::stdout(), "{out}");
    0
}

fn interactive(terminal: &mut ratatui::DefaultTerminal, args: &TopArgs, interval: Duration) -> std::io::Result<()> {
    let mut sort = args.sort;
    let mut filter = args.filter.clone().unwrap_or_default();
    let mut editing: Option<String> = None;
    let mut previous: Option<(Value, Instant)> = None;
    let mut rows = Vec::new();
    let mut error: Option<String> = None;
    let mut balanced = true;
    let mut next_fetch = Instant::now();
    loop {
        if Instant::now() >= next_fetch {
            next_fetch = Instant::now() + interval;
            match fetch(&args.url) {
                Ok(now) => {
                    let taken = Instant::now();
                    let elapsed = previous.as_ref().map_or(interval, |(_, at)| taken.duration_since(*at));
                    rows = rows::rows(previous.as_ref().map(|(v, _)| v), &now, elapsed);
                    balanced = now["balanced"].as_bool().unwrap_or(false);
                    previous = Some((now, taken));
                    error = None;
                }
                Err(e) => error = Some(e),
            }
        }
        let mut shown: Vec<_> = rows.iter().filter(|r| rows::matches(&filter, &r.id)).cloned().collect();
        sort.apply(&mut shown);
        let status = view::Status {
            url: &args.url,
            sort,
            filter: &filter,
            editing: editing.as_deref(),
            error: error.as_deref(),
            balanced,
        };
        terminal.draw(|frame| view::draw(frame, &shown, &status))?;
        let wait = next_fetch.saturating_duration_since(Instant::now());
        if !event::poll(wait)? {
            continue;
        }
        let Event::Key(key) = event::read()? else { continue };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match (&mut editing, key.code) {
            (Some(text), KeyCode::Char(c)) => text.push(c),
            (Some(text), KeyCode::Backspace) => {
                text.pop();
            }
            (Some(_), KeyCode::Enter) => filter = editing.take().unwrap_or_default(),
            (Some(_), KeyCode::Esc) => editing = None,
            (Some(_), _) => {}
            (None, KeyCode::Char('q') | KeyCode::Esc) => return Ok(()),
            (None, KeyCode::Char('s')) => sort = sort.next(),
            (None, KeyCode::Char('/')) => editing = Some(filter.clone()),
            (None, _) => {}
        }
    }
}

/// The ledger of the sluice at `url`.
fn fetch(url: &str) -> Result<Value, String> {
    let body = super::api_client::get(url, "/ledger")?.body().map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}/ledger: not the ledger ({e}); is this a sluice API?"))
}
