#![no_main]
//! Fuzzes `moat_swarm::probe::read_server_answer`, the reader of a TLS
//! server's first answer (ServerHello or HelloRetryRequest, the clear TLS
//! 1.2 flight after it, or an alert) that `moat audit report --probe`
//! runs on whatever a port sends back.

use libfuzzer_sys::fuzz_target;
use moat_swarm::probe::{
    AnswerError, MAX_CERTIFICATES_LEN, MAX_CHAIN_LEN, ServerAnswer, read_server_answer,
};

/// Hands out the input a few bytes at a time, as a socket may.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = read_server_answer(&mut &data[..]);
    match &whole {
        Ok(ServerAnswer::Hello { hello, flight }) => {
            // Only a TLS 1.2 (or earlier) ServerHello reads further.
            if hello.version > 0x0303 || hello.hello_retry_request {
                assert!(flight.certificates.is_empty() && flight.error.is_none());
                assert!(flight.ecdhe_group.is_none() && !flight.certificate_request);
            }
            assert!(flight.certificates.len() <= MAX_CHAIN_LEN);
            let total: usize = flight.certificates.iter().map(Vec::len).sum();
            assert!(total <= MAX_CERTIFICATES_LEN && total <= data.len());
            if hello.key_share_group.is_some() {
                assert!(hello.extensions.contains(&0x0033));
            }
        }
        Ok(ServerAnswer::Alert { .. }) => {}
        Err(AnswerError::NotTls { first_bytes }) => {
            assert!(!first_bytes.is_empty() && first_bytes.len() <= 5);
            assert!(data.starts_with(first_bytes));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // The answer does not depend on how the bytes arrive.
    let step = usize::from(data.first().copied().unwrap_or(1) % 7) + 1;
    let trickled = read_server_answer(&mut Trickle { data, step });
    match (&whole, &trickled) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("whole {a:?} but trickled {b:?}"),
    }
});
