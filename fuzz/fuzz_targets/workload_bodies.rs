//! Fuzz the request bodies of the CAS workload API (port 18765): arbitrary bytes are read as
//! each request type the CAS parses (`NonceRequest`, `AttestRequest`, `TagUpdateRequest`,
//! `HeartbeatRequest`, `ExitRequest`). Parsing must never panic, and a body that parses must
//! serialize again and read back to the same JSON (the CAS and the launcher share these types).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_api::workload::{
    AttestRequest, ExitRequest, HeartbeatRequest, NonceRequest, TagUpdateRequest,
};

macro_rules! roundtrip {
    ($ty:ty, $data:expr) => {
        if let Ok(body) = serde_json::from_slice::<$ty>($data) {
            let json = serde_json::to_vec(&body)
                .unwrap_or_else(|e| panic!("{} does not serialize: {e}", stringify!($ty)));
            let back = serde_json::from_slice::<$ty>(&json)
                .unwrap_or_else(|e| panic!("{} does not read back: {e}", stringify!($ty)));
            let again = serde_json::to_vec(&back)
                .unwrap_or_else(|e| panic!("{} does not serialize: {e}", stringify!($ty)));
            assert_eq!(json, again, "{} is not stable", stringify!($ty));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    roundtrip!(NonceRequest, data);
    roundtrip!(AttestRequest, data);
    roundtrip!(TagUpdateRequest, data);
    roundtrip!(HeartbeatRequest, data);
    roundtrip!(ExitRequest, data);
});
