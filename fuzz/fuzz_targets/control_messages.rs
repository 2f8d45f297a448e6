//! Control-socket lines: a client's request (read by `agent serve` from any local
//! root or same-user process) and the agent's replies (read by `agent events`).
//! Whatever parses also survives a round trip through its own serialisation.

#![no_main]

use agent::server::control::{Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = serde_json::from_str::<Request>(line) {
        let again = serde_json::to_string(&request).expect("a request serialises");
        assert_eq!(
            serde_json::from_str::<Request>(&again).ok(),
            Some(request),
            "{again}"
        );
    }
    if let Ok(reply) = Reply::parse(line) {
        let again = serde_json::to_string(&reply).expect("a reply serialises");
        assert!(!again.contains('\n'), "a reply is one line");
        assert_eq!(Reply::parse(&again).ok(), Some(reply), "{again}");
    }
});
