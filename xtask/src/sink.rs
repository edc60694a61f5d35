//! `xtask http-sink`: the load generator's peer. A minimal keep-alive HTTP/1.1 server that
//! answers GET /v1/round with a fixed task and reads and discards every POST body with a 202:
//! the transport ceiling of this machine, against which the aggregator's own cost shows.

use crate::load_pack;
use hearth_core::privacy::wire::Encoding;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The encoding the fixed round task asks for: f32 or quantized.
    #[arg(value_name = "ENCODING", default_value = "f32", value_parser = encoding)]
    encoding: Encoding,
}

fn encoding(name: &str) -> Result<Encoding, String> {
    [Encoding::F32, Encoding::QuantizedI16]
        .into_iter()
        .find(|e| e.name() == name)
        .ok_or_else(|| format!("{name:?} is not f32 or quantized"))
}

pub fn run(args: Args) -> Result<(), String> {
    let encoding = args.encoding.name();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let version = load_pack(Path::new("models/default"))?.manifest.model_version;
    let task = json!({"round_id": 1, "model_version": version, "clip_norm": 1.0, "noise_multiplier": 1.0, "encoding": encoding})
        .to_string();
    println!("http-sink listening on http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    for stream in listener.incoming().flatten() {
        let task = task.clone();
        std::thread::spawn(move || serve(stream, &task));
    }
    Ok(())
}

fn serve(stream: TcpStream, task: &str) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
        let is_get = line.starts_with("GET");
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).ok()?;
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let (status, reply) = if is_get { ("200 OK", task.to_string()) } else { ("202 Accepted", "{}".to_string()) };
        write!(writer, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}", reply.len())
            .ok()?;
    }
}
