//! VRL's `parse_json`, with the strings of the result sliced from the parsed text.
//!
//! `parse_json` is the first call of most remap programs that meet JSON logs, and its cost is
//! mostly allocation: VRL's version copies every string of the document. This one is VRL's
//! in every other respect: the same name, parameters, documentation and type definition
//! (taken from VRL's compiled expression), the same values (`sluice_core::json::parse`
//! reads with serde_json into `Value::String`s, as VRL's `Deserialize` does), the same error
//! messages, and VRL's own code for `max_depth`, which this does not speed up.

use bytestring::ByteString;
use sluice_core::json;
use vrl::compiler::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct ParseJson;

/// VRL's function, for everything but the common case's evaluation.
const VRL: vrl::stdlib::ParseJson = vrl::stdlib::ParseJson;

impl Function for ParseJson {
    fn identifier(&self) -> &'static str {
        VRL.identifier()
    }
    fn summary(&self) -> &'static str {
        VRL.summary()
    }
    fn usage(&self) -> &'static str {
        VRL.usage()
    }
    fn category(&self) -> &'static str {
        VRL.category()
    }
    fn internal_failure_reasons(&self) -> &'static [&'static str] {
        VRL.internal_failure_reasons()
    }
    fn return_kind(&self) -> u16 {
        VRL.return_kind()
    }
    fn return_rules(&self) -> &'static [&'static str] {
        VRL.return_rules()
    }
    fn notices(&self) -> &'static [&'static str] {
        VRL.notices()
    }
    fn pure(&self) -> bool {
        VRL.pure()
    }
    fn examples(&self) -> &'static [Example] {
        VRL.examples()
    }
    fn parameters(&self) -> &'static [Parameter] {
        VRL.parameters()
    }

    fn compile(&self, state: &state::TypeState, ctx: &mut FunctionCompileContext, arguments: ArgumentList) -> Compiled {
        let value = arguments.required("value");
        let lossy = arguments.optional("lossy");
        let with_depth = arguments.optional("max_depth").is_some();
        let vrl = VRL.compile(state, ctx, arguments)?;
        if with_depth {
            return Ok(vrl);
        }
        Ok(ParseJsonFn { value, lossy, vrl }.as_expr())
    }
}

#[derive(Debug, Clone)]
struct ParseJsonFn {
    value: Box<dyn Expression>,
    lossy: Option<Box<dyn Expression>>,
    /// VRL's compiled call: its type definition is this one's.
    vrl: Box<dyn Expression>,
}

impl FunctionExpression for ParseJsonFn {
    fn resolve(&self, ctx: &mut Context) -> Resolved {
        let value = self.value.resolve(ctx)?;
        let lossy = match &self.lossy {
            Some(lossy) => lossy.resolve(ctx)?.try_boolean()?,
            None => true,
        };
        parse(value, lossy)
    }

    fn type_def(&self, state: &state::TypeState) -> TypeDef {
        self.vrl.type_def(state)
    }
}

const BOM: char = '\u{feff}';

/// VRL's steps: lossy (the default), the text made valid UTF-8 and every leading byte order
/// mark removed; not lossy, the bytes as they are less one leading mark.
fn parse(value: Value, lossy: bool) -> Resolved {
    let parsed = match value {
        Value::String(text) => json::parse_text(&without_bom(text, lossy)),
        Value::Bytes(bytes) if !lossy => {
            let start = if bytes.starts_with(b"\xef\xbb\xbf") { BOM.len_utf8() } else { 0 };
            json::parse(bytes.slice(start..))
        }
        Value::Bytes(bytes) => {
            let text = ByteString::try_from(bytes.clone())
                .unwrap_or_else(|_| ByteString::from(String::from_utf8_lossy(&bytes).into_owned()));
            json::parse_text(&without_bom(text, true))
        }
        other if lossy => {
            let text = ByteString::from(other.try_bytes_utf8_lossy()?.into_owned());
            json::parse_text(&without_bom(text, true))
        }
        other => json::parse(other.try_bytes()?),
    };
    parsed.map_err(|e| format!("unable to parse json: {e}").into())
}

/// `text` less its leading byte order marks: all of them, or one.
fn without_bom(text: ByteString, all: bool) -> ByteString {
    let rest = if all { text.trim_start_matches(BOM) } else { text.strip_prefix(BOM).unwrap_or(&text) };
    if rest.len() == text.len() { text } else { text.slice_ref(rest) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sluice_core::LogEvent;
    use sluice_core::event::EventMetadata;
    use vrl::compiler::runtime::Runtime;
    use vrl::compiler::{Program, TimeZone};

    use super::*;

    /// The programs both functions run, each returning its value and its error.
    const PROGRAMS: &[&str] = &[
        "v, err = parse_json(.message); [v, err]",
        "v, err = parse_json(.message, lossy: false); [v, err]",
        "v, err = parse_json(.message, max_depth: 2); [v, err]",
        "parse_json!(.message)",
    ];

    struct Both {
        ours: Vec<Program>,
        vrl: Vec<Program>,
    }

    fn programs(functions: &[Box<dyn Function>]) -> Vec<Program> {
        PROGRAMS
            .iter()
            .map(|source| match vrl::compiler::compile(source, functions) {
                Ok(compiled) => compiled.program,
                Err(e) => panic!("{source}: {e:?}"),
            })
            .collect()
    }

    fn both() -> Both {
        Both { ours: programs(&crate::transforms::vrl::functions()), vrl: programs(&vrl::stdlib::all()) }
    }

    /// The program's outcome as text: `Debug` tells `Value::String` from `Value::Bytes`.
    fn outcome(program: &Program, message: &Value) -> String {
        let mut map = ObjectMap::new();
        map.insert("message".into(), message.clone());
        let mut event = LogEvent::from_value(Value::Object(map), EventMetadata::new("s", chrono::Utc::now()));
        let result = crate::transforms::vrl::run(&mut Runtime::default(), program, &TimeZone::default(), &mut event);
        format!("{result:?}")
    }

    /// `message` as bytes and, when it is UTF-8, as a VRL string: every program gives the same
    /// outcome with either function. With `max_depth` both run VRL's code, whose error for a
    /// document with several faults depends on a `HashMap`'s order, so the fuzz target
    /// (`every_program = false`) leaves that program out.
    fn assert_same(both: &Both, message: &[u8], every_program: bool) {
        let mut messages = vec![Value::Bytes(bytes::Bytes::copy_from_slice(message))];
        if let Ok(text) = std::str::from_utf8(message) {
            messages.push(Value::from(text));
        }
        for value in &messages {
            for (i, (ours, vrl)) in both.ours.iter().zip(&both.vrl).enumerate() {
                if !every_program && PROGRAMS[i].contains("max_depth") {
                    continue;
                }
                assert_eq!(outcome(ours, value), outcome(vrl, value), "{} on {value:?}", PROGRAMS[i]);
            }
        }
    }

    fn seeds() -> Vec<Vec<u8>> {
        [
            &br#"{"log_id":"1c80317fa3b1799d","timestamp":"2026-11-22T01:00:00.000Z","model":"llama-3-70b","prompt_tokens":3042,"latency_ms":4092,"is_fine_tune":false,"region":"ap-south-1"}"#[..],
            br#"{"a":{"b":{"c":[1,2.5,-3e2,null,true]}},"esc":"q\"\\\n\u00e9\ud83d\ude00","big":18446744073709551615}"#,
            "\u{feff}\u{feff}{\"bom\":\"twice\"}".as_bytes(),
            b"[{\"x\":1},{\"x\":2}]",
            b"\"a string\"",
            b"{\"bad\":\"caf\xe9\"}",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect()
    }

    #[test]
    fn gives_what_vrls_parse_json_gives() {
        let both = both();
        let mut cases = seeds();
        cases.extend([b"".to_vec(), b"{ INVALID }".to_vec(), b"{\"a\":1} x".to_vec(), b"\xef\xbb\xbf{}".to_vec()]);
        for case in cases {
            assert_same(&both, &case, true);
        }
    }

    #[test]
    fn type_checking_is_vrls() {
        for source in ["upcase(parse_json!(.message))", ".x = parse_json(.message)", ".x = parse_json!(.message).a"] {
            let diagnostics = |functions: &[Box<dyn Function>]| match vrl::compiler::compile(source, functions) {
                Ok(compiled) => format!("ok, {} warnings", compiled.warnings.len()),
                Err(e) => vrl::diagnostic::Formatter::new(source, e).to_string(),
            };
            assert_eq!(diagnostics(&crate::transforms::vrl::functions()), diagnostics(&vrl::stdlib::all()), "{source}");
        }
    }

    proptest! {
        #![proptest_config(sluice_fuzz::config(300))]

        /// Fuzz target: any message, JSON with a few edits or random bytes, parses with
        /// sluice's `parse_json` as with VRL's, errors included.
        #[test]
        fn any_message_parses_as_with_vrls_parse_json(message in prop_oneof![
            3 => sluice_fuzz::mutated(seeds(), 6),
            1 => proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'"'), Just(b'{'), Just(b'\\')], 0..80),
        ]) {
            thread_local!(static BOTH: Both = both());
            BOTH.with(|both| assert_same(both, &message, false));
        }
    }
}
