//! Property tests of what turns received bytes into frames and events: whatever arrives, cut
//! wherever the network cuts it, reading never panics or hangs, the frames do not depend on
//! where the input was cut, and every frame becomes events or a counted rejection.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sluice_core::event::{EventMetadata, LegacyTemplate};
use sluice_core::ledger::{ComponentKind, ComponentLedger};

use sluice_fuzz::pieces;

use super::Out;
use super::listen::Protocol;
use super::syslog::{Framing, Syslog, split_frames};
use crate::codecs::DecodingConfig;
use crate::codecs::decoding::{DecodingCodec, FrameStats, FramingConfig, FramingMethod};

/// Bytes with many delimiters, digits and braces (what framers and parsers branch on).
fn input() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => any::<u8>(),
            2 => Just(b'\n'),
            1 => Just(b' '),
            1 => b'0'..=b'9',
            1 => Just(b'<'),
            1 => Just(b'{'),
            1 => Just(b'"'),
        ],
        0..400,
    )
}

fn framed(framer: &crate::codecs::Framer, pieces: &[Vec<u8>]) -> (Vec<Bytes>, FrameStats) {
    let (mut buf, mut frames, mut stats) = (BytesMut::new(), Vec::new(), FrameStats::default());
    for piece in pieces {
        buf.extend_from_slice(piece);
        framer.split(&mut buf, &mut frames, &mut stats);
    }
    framer.finish(&mut buf, &mut frames, &mut stats);
    (frames, stats)
}

fn syslog_frames(pieces: &[Vec<u8>], max_length: usize) -> (Vec<Bytes>, usize) {
    let (mut state, mut buf, mut frames, mut oversized) = (Framing::default(), BytesMut::new(), Vec::new(), 0);
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        oversized += split_frames(&mut state, &mut buf, &mut frames, i + 1 == pieces.len(), max_length);
    }
    (frames, oversized)
}

proptest! {
    #![proptest_config(sluice_fuzz::config(1000))]

    #[test]
    fn newline_framing_does_not_depend_on_where_the_input_was_cut(
        data in input(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        max_length in prop_oneof![Just(None), (1usize..64).prop_map(Some)],
    ) {
        let config = FramingConfig {
            method: Some(FramingMethod::NewlineDelimited),
            newline_delimited: Some(crate::codecs::decoding::MaxLength { max_length }),
            character_delimited: None,
        };
        let framer = config.framer(FramingMethod::NewlineDelimited, None).unwrap_or_else(|e| panic!("{e}"));
        let whole = framed(&framer, std::slice::from_ref(&data));
        let cut = framed(&framer, &pieces(&data, &cuts));
        prop_assert_eq!(&whole.0, &cut.0);
        prop_assert_eq!(whole.1, cut.1);
        let framed_bytes: usize = whole.0.iter().map(Bytes::len).sum();
        prop_assert!(framed_bytes <= data.len());
        if max_length.is_none() {
            // Every byte but the delimiters is in a frame.
            let delimiters = data.iter().filter(|b| **b == b'\n').count();
            prop_assert_eq!(framed_bytes + delimiters, data.len());
        }
    }

    #[test]
    fn any_frame_decodes_to_events_or_an_error(frame in input(), json in any::<bool>()) {
        let config = DecodingConfig { codec: if json { DecodingCodec::Json } else { DecodingCodec::Bytes }, ..DecodingConfig::default() };
        let decoder = config.decoder("socket");
        let template = LegacyTemplate::new("socket", None, EventMetadata::new("s", chrono::Utc::now()));
        let mut out = Vec::new();
        let decoded = decoder.decode(Bytes::from(frame), &template, &mut out);
        if decoded.is_err() {
            prop_assert!(out.is_empty(), "a frame that fails makes no event");
        } else {
            prop_assert!(!out.is_empty() || json, "a bytes frame is one event");
        }
    }

    #[test]
    fn syslog_stream_framing_does_not_depend_on_where_the_input_was_cut(
        data in input(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        max_length in 1usize..128,
    ) {
        let whole = syslog_frames(std::slice::from_ref(&data), max_length);
        let cut = syslog_frames(&pieces(&data, &cuts), max_length);
        prop_assert_eq!(&whole.0, &cut.0);
        prop_assert_eq!(whole.1, cut.1);
        prop_assert!(whole.0.iter().all(|f| f.len() <= max_length));
    }

    #[test]
    fn every_syslog_frame_becomes_an_event_or_a_dead_letter(frames in proptest::collection::vec(input(), 1..8)) {
        let protocol = Syslog { id: std::sync::Arc::from("s"), max_length: 1000, host_key: Some("host".into()) };
        let ledger = ComponentLedger::new("s", ComponentKind::Source, "syslog");
        let mut frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        let n = frames.len();
        let mut out = Vec::new();
        protocol.emit(&mut frames, None, &ledger, &mut out);
        let events: usize = out
            .iter()
            .map(|o| match o {
                Out::Chunk(events) => events.len(),
                Out::DeadLetters(events, _) => events.len(),
            })
            .sum();
        prop_assert_eq!(events, n);
    }

    #[test]
    fn any_container_log_line_parses_or_is_refused(line in prop_oneof![
        input(),
        Just(br#"{"log":"hello\n","stream":"stdout","time":"2026-12-02T08:00:00.1Z"}"#.to_vec()),
        Just(b"2026-12-02T08:00:00.123456789Z stdout P part".to_vec()),
    ]) {
        if let Some(record) = super::kubernetes_logs::parse(&Bytes::from(line.clone())) {
            prop_assert!(record.content.len() <= line.len());
        }
    }

    /// A compressed body comes out whole or is refused (400 when it does not decompress, 413
    /// past 4 x `max_body_bytes`), never cut: before, a body past the limit was cut there and
    /// its tail lost without a word.
    #[test]
    fn a_compressed_body_is_decompressed_whole_or_refused(
        payload in proptest::collection::vec(prop_oneof![3 => any::<u8>(), 1 => Just(b'\n')], 0..2000),
        limit in 1usize..600,
        gzip in any::<bool>(),
        damage in proptest::option::of((any::<usize>(), any::<u8>())),
    ) {
        use std::io::Write;
        let mut compressed = Vec::new();
        let written = if gzip {
            let mut e = flate2::write::GzEncoder::new(&mut compressed, flate2::Compression::fast());
            e.write_all(&payload).and_then(|()| e.finish().map(|_| ()))
        } else {
            let mut e = flate2::write::ZlibEncoder::new(&mut compressed, flate2::Compression::fast());
            e.write_all(&payload).and_then(|()| e.finish().map(|_| ()))
        };
        prop_assert!(written.is_ok());
        if let Some((at, byte)) = damage {
            let at = at % compressed.len();
            compressed[at] ^= byte | 1;
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static(if gzip { "gzip" } else { "deflate" }));
        match super::http_server::decompress(&headers, Bytes::from(compressed), limit) {
            Ok(body) if damage.is_none() => prop_assert_eq!(&body[..], &payload[..]),
            Ok(body) => prop_assert!(body.len() <= 4 * limit),
            Err(answer) if damage.is_none() => {
                prop_assert_eq!(answer.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
                prop_assert!(payload.len() > 4 * limit);
            }
            Err(answer) => prop_assert!(matches!(answer.status().as_u16(), 400 | 413)),
        }
    }
}
