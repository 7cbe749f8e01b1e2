//! Times the parser alone over a log file (no Python objects): `cargo run --release --example parse_speed FILE`.
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("a log file");
    let text = String::from_utf8_lossy(&std::fs::read(path).expect("readable")).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let t = Instant::now();
    let mut kinds = 0usize;
    for line in &lines {
        kinds += eximtrack_core::parse::parse_line(line).kind.len();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{:.3} us/line over {} lines ({kinds})",
        dt / lines.len() as f64 * 1e6,
        lines.len()
    );
}
