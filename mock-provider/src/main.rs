//! `mock-provider [--port N] [--chunk-delay-ms N]`: a stand-in LLM provider for local
//! development, so that the gateway streams an answer with no provider keys.

use std::process::exit;

use mock_provider::{MockServer, Options};

const USAGE: &str = "usage: mock-provider [--port N (default 8788)] [--chunk-delay-ms N (default 40)]";

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> T {
    match value.as_deref().map(str::parse) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("{flag} needs a number\n{USAGE}");
            exit(2)
        }
    }
}

fn main() {
    let mut port: u16 = 8788;
    // Slow enough for a person to see the answer stream in.
    let mut options = Options { chunk_delay_ms: 40 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = number(&arg, args.next()),
            "--chunk-delay-ms" => options.chunk_delay_ms = number(&arg, args.next()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ => {
                eprintln!("unknown argument `{arg}`\n{USAGE}");
                exit(2)
            }
        }
    }
    let server = match MockServer::start_with(&format!("127.0.0.1:{port}"), options) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mock-provider: cannot listen on 127.0.0.1:{port}: {e}");
            exit(1)
        }
    };
    let url = server.base_url();
    println!("mock-provider listening on {url}");
    println!("  OpenAI format: POST {url}/<tag>/v1/chat/completions (base URL {url}/<tag>/v1)");
    println!("  control: GET {url}/_mock/requests?needle=X, POST/DELETE {url}/_mock/script");
    loop {
        std::thread::park();
    }
}
