//! Environment interpolation, as Vector does it, on the raw text of a config file.
//!
//! `$$` is a literal `$`; `${VAR}` and `$VAR`; `${VAR:-default}` (unset or empty),
//! `${VAR-default}` (unset only), `${VAR:?message}` and `${VAR?message}` (error when unset or
//! empty / unset). An unset variable with no default is an error; so is a value containing a
//! newline (it could inject config).

/// Interpolates `text`; `lookup` reads a variable. Errors carry the 1-based line number.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut last = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'$' if bytes.get(i + 1) == Some(&b'$') => {
                out.push_str(&text[last..i + 1]);
                i += 2;
                last = i;
            }
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                let Some(close) = text[i + 2..].find('}') else {
                    i += 1;
                    continue;
                };
                out.push_str(&text[last..i]);
                let inner = &text[i + 2..i + 2 + close];
                match expand_braced(inner, lookup) {
                    Ok(value) => push_value(&mut out, &value, inner, line, &mut errors),
                    Err(message) => errors.push((line, message)),
                }
                i += close + 3;
                last = i;
            }
            b'$' if bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_') => {
                let end = text[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(text.len(), |n| i + 1 + n);
                out.push_str(&text[last..i]);
                let name = &text[i + 1..end];
                match lookup(name) {
                    Some(value) => push_value(&mut out, &value, name, line, &mut errors),
                    None => errors.push((line, format!("environment variable `{name}` is not set"))),
                }
                i = end;
                last = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[last..]);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn push_value(out: &mut String, value: &str, name: &str, line: usize, errors: &mut Vec<(usize, String)>) {
    if value.contains(['\n', '\r']) {
        errors.push((line, format!("environment variable in `{name}` contains a newline, which is not allowed")));
    } else {
        out.push_str(value);
    }
}

fn expand_braced(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_end = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_end);
    if name.is_empty() {
        return Err(format!("`${{{inner}}}` is not a valid variable reference"));
    }
    let value = lookup(name);
    let empty_or_unset = value.as_deref().is_none_or(str::is_empty);
    if rest.is_empty() {
        return value.ok_or_else(|| format!("environment variable `{name}` is not set"));
    }
    let (op, arg) = if let Some(arg) = rest.strip_prefix(":-") {
        (":-", arg)
    } else if let Some(arg) = rest.strip_prefix(":?") {
        (":?", arg)
    } else if let Some(arg) = rest.strip_prefix('-') {
        ("-", arg)
    } else if let Some(arg) = rest.strip_prefix('?') {
        ("?", arg)
    } else {
        return Err(format!("`${{{inner}}}` is not a valid variable reference"));
    };
    match op {
        ":-" if empty_or_unset => Ok(arg.to_owned()),
        "-" if value.is_none() => Ok(arg.to_owned()),
        ":?" if empty_or_unset => Err(format!("environment variable `{name}` is required: {arg}")),
        "?" if value.is_none() => Err(format!("environment variable `{name}` is required: {arg}")),
        _ => Ok(value.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("node-1".into()),
            "EMPTY" => Some(String::new()),
            "BAD" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        let text = "a=${HOST} b=$HOST c=${NOPE:-d} e=${EMPTY:-f} g=${EMPTY-h} i=$$HOST j=${NOPE-k}";
        assert_eq!(interpolate(text, &env).ok().as_deref(), Some("a=node-1 b=node-1 c=d e=f g= i=$HOST j=k"));
    }

    #[test]
    fn errors_name_the_variable_and_line() {
        let errors = interpolate("x\ny=${MISSING}\nz=${BAD}\nw=${EMPTY:?needed}", &env).err().unwrap_or_default();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].0, 2);
        assert!(errors[0].1.contains("MISSING"));
        assert!(errors[1].1.contains("newline"));
        assert!(errors[2].1.contains("needed"));
    }
}
