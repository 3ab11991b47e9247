//! Helpers shared by the `#[pg_test]` modules (test builds only).

use pgrx::prelude::*;

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

pub fn setup_domains() {
    Spi::run("SELECT mseg.create_domain('t_one'); SELECT mseg.create_domain('t_two')").unwrap();
}
