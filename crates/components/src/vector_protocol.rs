//! Vector's native protocol, version 2: the gRPC service `vector.Vector` (`PushEvents`,
//! `HealthCheck`) and the event messages of Vector's `event.proto`, with the same message
//! and field numbers, so that sluice and Vector talk to each other in both directions.
//!
//! Logs travel whole (their value, in `Log.value`). Metrics and traces are read only far
//! enough to be told apart: the `vector` source counts them as unsupported.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes};
use chrono::{DateTime, Utc};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use vrl::value::{KeyString, ObjectMap, Value};

pub const PUSH_EVENTS: &str = "/vector.Vector/PushEvents";
pub const HEALTH_CHECK: &str = "/vector.Vector/HealthCheck";
pub const SERVICE: &str = "vector.Vector";

/// `vector.PushEventsRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushEventsRequest {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<EventWrapper>,
}

/// `vector.PushEventsResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct PushEventsResponse {}

/// `vector.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckRequest {}

/// `vector.HealthCheckResponse`; `status` is `SERVING` (0) or `NOT_SERVING` (1).
#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

pub const SERVING: i32 = 0;
pub const NOT_SERVING: i32 = 1;

/// `event.EventWrapper`.
#[derive(Clone, PartialEq, Message)]
pub struct EventWrapper {
    #[prost(oneof = "Event", tags = "1, 2, 3")]
    pub event: Option<Event>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Event {
    #[prost(message, tag = "1")]
    Log(Log),
    /// Not read: only told apart.
    #[prost(message, tag = "2")]
    Metric(Opaque),
    #[prost(message, tag = "3")]
    Trace(Opaque),
}

/// A message whose fields are skipped.
#[derive(Clone, PartialEq, Message)]
pub struct Opaque {}

/// `event.Log`: `fields` is the older form of `value`.
#[derive(Clone, PartialEq, Message)]
pub struct Log {
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, ProtoValue>,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ProtoValue>,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ProtoValue>,
}

/// `event.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoValue {
    #[prost(oneof = "Kind", tags = "1, 2, 4, 5, 6, 7, 8, 9")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(bytes = "bytes", tag = "1")]
    RawBytes(Bytes),
    #[prost(message, tag = "2")]
    Timestamp(Timestamp),
    #[prost(int64, tag = "4")]
    Integer(i64),
    #[prost(double, tag = "5")]
    Float(f64),
    #[prost(bool, tag = "6")]
    Boolean(bool),
    #[prost(message, tag = "7")]
    Map(ValueMap),
    #[prost(message, tag = "8")]
    Array(ValueArray),
    /// `event.ValueNull`, always `NULL_VALUE` (0).
    #[prost(int32, tag = "9")]
    Null(i32),
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `event.ValueMap`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueMap {
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, ProtoValue>,
}

/// `event.ValueArray`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueArray {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<ProtoValue>,
}

/// An event's value as Vector's protobuf.
pub fn to_proto(value: &Value) -> ProtoValue {
    let kind = match value {
        Value::Bytes(b) => Kind::RawBytes(b.clone()),
        Value::Timestamp(t) => {
            Kind::Timestamp(Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 })
        }
        Value::Integer(i) => Kind::Integer(*i),
        Value::Float(f) => Kind::Float(f.into_inner()),
        Value::Boolean(b) => Kind::Boolean(*b),
        Value::Object(map) => {
            Kind::Map(ValueMap { fields: map.iter().map(|(k, v)| (k.as_str().to_owned(), to_proto(v))).collect() })
        }
        Value::Array(items) => Kind::Array(ValueArray { items: items.iter().map(to_proto).collect() }),
        Value::Null => Kind::Null(0),
        other => Kind::RawBytes(Bytes::from(other.to_string_lossy().into_owned())),
    };
    ProtoValue { kind: Some(kind) }
}

/// Vector's protobuf as an event's value.
pub fn from_proto(value: ProtoValue) -> Value {
    match value.kind {
        Some(Kind::RawBytes(b)) => Value::Bytes(b),
        Some(Kind::Timestamp(t)) => {
            DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32).map_or(Value::Null, Value::Timestamp)
        }
        Some(Kind::Integer(i)) => Value::Integer(i),
        Some(Kind::Float(f)) => ordered_float::NotNan::new(f).map_or(Value::Null, Value::Float),
        Some(Kind::Boolean(b)) => Value::Boolean(b),
        Some(Kind::Map(map)) => Value::Object(from_fields(map.fields)),
        Some(Kind::Array(array)) => Value::Array(array.items.into_iter().map(from_proto).collect()),
        Some(Kind::Null(_)) | None => Value::Null,
    }
}

pub fn from_fields(fields: BTreeMap<String, ProtoValue>) -> ObjectMap {
    fields.into_iter().map(|(k, v)| (KeyString::from(k), from_proto(v))).collect()
}

/// A log event as one `EventWrapper`, appended to `buf` as field 1 of a `PushEventsRequest`:
/// a batch of these, one after the other, is a whole request.
pub fn encode_request_item(value: &Value, buf: &mut Vec<u8>) {
    let wrapper = EventWrapper {
        event: Some(Event::Log(Log { fields: BTreeMap::new(), value: Some(to_proto(value)), metadata: None })),
    };
    prost::encoding::message::encode(1, &wrapper, buf);
}

/// Sends a request that is already encoded (see [`encode_request_item`]) and reads back `T`.
#[derive(Debug, Clone, Default)]
pub struct RawCodec<T>(std::marker::PhantomData<T>);

impl<T: Message + Default + Send + 'static> Codec for RawCodec<T> {
    type Encode = Bytes;
    type Decode = T;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<T>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(std::marker::PhantomData)
    }
}

#[derive(Debug, Clone, Default)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProstDecoder<T>(std::marker::PhantomData<T>);

impl<T: Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        let item = T::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| Status::invalid_argument(format!("not a valid message: {e}")))?;
        Ok(Some(item))
    }
}

/// Both sides of the server: prost messages in and out.
#[derive(Debug, Clone, Default)]
pub struct ServerCodec<In, Out>(std::marker::PhantomData<(In, Out)>);

impl<In: Message + Default + Send + 'static, Out: Message + Send + 'static> Codec for ServerCodec<In, Out> {
    type Encode = Out;
    type Decode = In;
    type Encoder = ProstEncoder<Out>;
    type Decoder = ProstDecoder<In>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(std::marker::PhantomData)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProstEncoder<T>(std::marker::PhantomData<T>);

impl<T: Message> Encoder for ProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_protobuf() {
        let mut map = ObjectMap::new();
        map.insert("message".into(), Value::Bytes(Bytes::from_static(b"hello")));
        map.insert("n".into(), Value::Integer(-3));
        map.insert("ratio".into(), Value::Float(ordered_float::NotNan::new(0.5).unwrap_or_default()));
        map.insert("ok".into(), Value::Boolean(true));
        map.insert("none".into(), Value::Null);
        map.insert("list".into(), Value::Array(vec![Value::Integer(1), Value::Bytes(Bytes::from_static(b"x"))]));
        let ts = DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        map.insert("timestamp".into(), Value::Timestamp(ts));
        let value = Value::Object(map);
        let mut buf = Vec::new();
        encode_request_item(&value, &mut buf);
        encode_request_item(&value, &mut buf);
        let request = PushEventsRequest::decode(&buf[..]).unwrap_or_default();
        assert_eq!(request.events.len(), 2);
        for wrapper in request.events {
            let Some(Event::Log(log)) = wrapper.event else { panic!("a log") };
            assert_eq!(log.value.map(from_proto), Some(value.clone()));
        }
    }

    #[test]
    fn field_numbers_are_vectors() {
        // Log.value (2) holding Value.raw_bytes (1) "a": 0x12 len [0x0a 0x01 'a'].
        let log = Log {
            fields: BTreeMap::new(),
            value: Some(ProtoValue { kind: Some(Kind::RawBytes(Bytes::from_static(b"a"))) }),
            metadata: None,
        };
        assert_eq!(log.encode_to_vec(), vec![0x12, 0x03, 0x0a, 0x01, b'a']);
        // Value.integer is field 4 (3 is reserved), Value.null field 9.
        assert_eq!(ProtoValue { kind: Some(Kind::Integer(1)) }.encode_to_vec(), vec![0x20, 0x01]);
        assert_eq!(ProtoValue { kind: Some(Kind::Null(0)) }.encode_to_vec(), vec![0x48, 0x00]);
        // EventWrapper.log is field 1; a metric (2) is told apart without being read.
        let metric = [0x12, 0x02, 0x0a, 0x00];
        assert!(matches!(EventWrapper::decode(&metric[..]).ok().and_then(|w| w.event), Some(Event::Metric(_))));
    }
}
