//! Templates: `{{ field }}` placeholders plus strftime (`%Y-%m-%d`) in the literal parts,
//! formatted with the event's `timestamp` (or the ingest time when it has none).
//! `{{ secret.NAME }}` is the event's secret `NAME` (set with VRL's `set_secret`), never a field.

use std::fmt::Write;

use sluice_core::LogEvent;
use vrl::value::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(String),
    Secret(String),
}

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    strftime: bool,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find("}}") else {
                return Err(format!("unclosed `{{{{` in template `{text}`"));
            };
            let field = rest[open + 2..open + close].trim().trim_start_matches('.');
            if field.is_empty() {
                return Err(format!("empty `{{{{ }}}}` in template `{text}`"));
            }
            match field.strip_prefix("secret.") {
                Some(name) if !name.is_empty() => parts.push(Part::Secret(name.to_owned())),
                _ => parts.push(Part::Field(field.to_owned())),
            }
            rest = &rest[open + close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        let strftime = parts.iter().any(|p| matches!(p, Part::Literal(l) if l.contains('%')));
        if strftime {
            for part in &parts {
                if let Part::Literal(l) = part {
                    let mut probe = String::new();
                    if write!(probe, "{}", chrono::Utc::now().format(l)).is_err() {
                        return Err(format!("invalid strftime specifier in template `{text}`"));
                    }
                }
            }
        }
        Ok(Self { parts, strftime })
    }

    /// True when the output depends on the event.
    pub fn is_dynamic(&self) -> bool {
        self.strftime || self.parts.iter().any(|p| matches!(p, Part::Field(_) | Part::Secret(_)))
    }

    /// The event fields the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The field path when the template is exactly one `{{ field }}` and nothing else.
    pub fn single_field(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Field(name)] if !self.strftime => Some(name),
            _ => None,
        }
    }

    /// The literal text before the first placeholder or strftime specifier.
    pub fn static_prefix(&self) -> String {
        let mut prefix = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => match l.find('%') {
                    Some(at) => {
                        prefix.push_str(&l[..at]);
                        return prefix;
                    }
                    None => prefix.push_str(l),
                },
                Part::Field(_) | Part::Secret(_) => return prefix,
            }
        }
        prefix
    }

    /// Renders for `event`; a missing field is an error naming it.
    pub fn render(&self, event: &LogEvent) -> Result<String, String> {
        let mut out = String::new();
        let time = match event.get(sluice_core::event::fields::timestamp()) {
            Some(Value::Timestamp(ts)) => *ts,
            _ => event.ingest_time(),
        };
        for part in &self.parts {
            match part {
                Part::Literal(l) if self.strftime && l.contains('%') => {
                    let _ = write!(out, "{}", time.format(l));
                }
                Part::Literal(l) => out.push_str(l),
                Part::Field(name) => match lookup(event.value(), name) {
                    Some(Value::Bytes(b)) => out.push_str(&String::from_utf8_lossy(b)),
                    Some(Value::Null) | None => {
                        return Err(format!("missing field `{name}` for the template"));
                    }
                    Some(other) => out.push_str(&other.to_string_lossy()),
                },
                Part::Secret(name) => match event.secret(name) {
                    Some(value) => out.push_str(value),
                    None => return Err(format!("missing secret `{name}` for the template")),
                },
            }
        }
        Ok(out)
    }
}

/// The value at a dotted `path` of `value`.
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| match v {
        Value::Object(map) => map.get(key),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::event::EventMetadata;
    use vrl::value::ObjectMap;

    #[test]
    fn renders_fields_and_time() {
        let t = Template::parse("/logs/{{ app.name }}/%Y.log").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.static_prefix(), "/logs/");
        let mut app = ObjectMap::new();
        app.insert("name".into(), Value::from("web"));
        let mut map = ObjectMap::new();
        map.insert("app".into(), Value::Object(app));
        let ts = chrono::DateTime::parse_from_rfc3339("2026-05-01T00:00:00Z").map(|t| t.to_utc()).unwrap_or_default();
        map.insert("timestamp".into(), Value::Timestamp(ts));
        let event = LogEvent::from_value(Value::Object(map), EventMetadata::new("s", ts));
        assert_eq!(t.render(&event).as_deref(), Ok("/logs/web/2026.log"));
        let missing = Template::parse("{{ nope }}").unwrap_or_else(|e| panic!("{e}"));
        assert!(missing.render(&event).is_err());
        let secret = Template::parse("Bearer {{ secret.api_key }}").unwrap_or_else(|e| panic!("{e}"));
        assert!(secret.render(&event).is_err(), "no secret set yet");
        let mut event = event;
        event.set_secret("api_key", "k1");
        assert_eq!(secret.render(&event).as_deref(), Ok("Bearer k1"));
    }
}
