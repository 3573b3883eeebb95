//! Sinks of the AWS family. What they share (region, credentials, signing) is the AWS layer
//! in `sluice_net::aws`; each sink here is its request and how it reads the answer.

pub mod s3;
pub mod sqs;
