#![no_main]
//! Fuzzes a task's SPIFFE Workload API server (moat-workload) with what a
//! workload can send it: the first byte picks the method and whether the
//! `workload.spiffe.io` header is there, the rest is the gRPC request
//! body. No panic; a call without the header never gets a message.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let header = which & 0x80 != 0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (status, first) =
        runtime.block_on(moat_workload::fuzz_call(which & 0x7f, header, body.to_vec()));
    assert_eq!(status, 200, "gRPC answers in trailers, over HTTP 200");
    if !header {
        assert!(first.is_none(), "a call without the security header got a message");
    }
});
