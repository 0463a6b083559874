//! Fuzz the LAS socket messages: arbitrary bytes fed to the server's request parser
//! (`veil_las::server::parse_request`, what a local process can send) and to the
//! `EvidenceResponse` decoding (what the launcher reads back) must never panic, and whatever
//! parses survives a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_api::las::{EvidenceRequest, EvidenceResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = veil_las::server::parse_request(data)
        && let Ok(bytes) = serde_json::to_vec(&req)
    {
        let back: Result<EvidenceRequest, _> = serde_json::from_slice(&bytes);
        assert_eq!(back.ok(), Some(req));
    }
    if let Ok(resp) = serde_json::from_slice::<EvidenceResponse>(data)
        && let Ok(bytes) = serde_json::to_vec(&resp)
    {
        let back: Result<EvidenceResponse, _> = serde_json::from_slice(&bytes);
        assert_eq!(back.ok(), Some(resp));
    }
});
