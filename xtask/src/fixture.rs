//! Native side of the browser-equals-native test: rank a fixture and print the result as JSON.

use crate::load_pack;
use hearth_core::device::catalog::{Ad, Context};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::Event;
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::RankOptions;
use serde_json::Value;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fixture: JSON with `events`, `ads`, `context` and `options`.
    #[arg(value_name = "FIXTURE.json")]
    fixture: PathBuf,
    /// The model pack to rank with.
    #[arg(long, value_name = "DIR", default_value = "models/default")]
    pack: PathBuf,
}

pub fn rank_fixture(args: Args) -> Result<(), String> {
    let (path, pack) = (args.fixture, args.pack);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let fixture: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let field = |k: &str| fixture.get(k).cloned().ok_or(format!("fixture lacks `{k}`"));
    let events: Vec<Event> = serde_json::from_value(field("events")?).map_err(|e| e.to_string())?;
    let ads: Vec<Ad> = serde_json::from_value(field("ads")?).map_err(|e| e.to_string())?;
    let context: Context = serde_json::from_value(field("context")?).map_err(|e| e.to_string())?;
    let options: RankOptions = serde_json::from_value(field("options")?).map_err(|e| e.to_string())?;
    let mut profile = Profile::new(ProfileConfig::default()).map_err(|e| e.to_string())?;
    for e in events {
        profile.record(e).map_err(|e| e.to_string())?;
    }
    let engine = Engine::new(load_pack(&pack)?, profile).map_err(|e| e.to_string())?;
    let ranked = engine.rank_candidates(ads, &context, &options).map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string_pretty(&ranked).map_err(|e| e.to_string())?);
    Ok(())
}
