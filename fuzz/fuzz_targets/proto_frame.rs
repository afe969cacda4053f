//! Fuzz target: arbitrary bytes into the frame decoder; anything that decodes must re-encode to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = proto::read_frame(&mut &data[..]) {
        let mut buf = [0u8; proto::MAX_FRAME];
        let n = msg.encode(&mut buf);
        assert_eq!(proto::Msg::decode(&buf[..n]), Ok(msg));
    }
    let _ = proto::Msg::decode(data);
});
