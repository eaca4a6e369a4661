//! Writes the dev runtime's raw chain spec to standard output: the default
//! genesis config merged with the `development` preset, built into storage,
//! plus the runtime's wasm under `:code`.
//!
//! Usage: `nsn-dev-spec WASM_FILE [PRESET] > chain-spec.json`, where PRESET
//! is `development` (the default) or `multi-executor`.

use std::collections::BTreeMap;

use frame::deps::sp_runtime::BuildStorage;
use nsn_dev_runtime::RuntimeGenesisConfig;
use serde_json::{Map, Value, json};

/// Merges `patch` into `base`: objects key by key, anything else replaced.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wasm_path = std::env::args()
        .nth(1)
        .ok_or("usage: nsn-dev-spec WASM_FILE")?;
    let preset = match std::env::args().nth(2).as_deref() {
        None | Some("development") => nsn_dev_runtime::presets::development(),
        Some(nsn_dev_runtime::presets::MULTI_EXECUTOR) => nsn_dev_runtime::presets::multi_executor(),
        Some(other) => return Err(format!("unknown preset {other:?}").into()),
    };
    let wasm = std::fs::read(&wasm_path)?;
    let mut config = serde_json::to_value(RuntimeGenesisConfig::default())?;
    merge(&mut config, preset);
    let config: RuntimeGenesisConfig = serde_json::from_value(config)?;
    let mut storage = config.build_storage()?;
    storage.top.insert(b":code".to_vec(), wasm);
    let top: BTreeMap<String, String> = storage
        .top
        .iter()
        .map(|(k, v)| (hex(k), hex(v)))
        .collect();
    let mut top_json = Map::new();
    for (k, v) in top {
        top_json.insert(k, Value::String(v));
    }
    #[allow(unused_mut)]
    let mut spec = json!({
        "name": "NSN Dev",
        "id": "nsn_dev",
        "chainType": "Development",
        "bootNodes": [],
        "telemetryEndpoints": null,
        "protocolId": null,
        "properties": { "tokenDecimals": 12, "tokenSymbol": "NSN", "ss58Format": 42 },
        "codeSubstitutes": {},
        "genesis": { "raw": { "top": top_json, "childrenDefault": {} } }
    });
    // The parachain flavour names its relay chain and para id, which
    // polkadot-omni-node reads from the spec (the flavour has no runtime API
    // for them); in dev mode the relay chain is only a name.
    #[cfg(feature = "parachain")]
    {
        spec["id"] = json!("nsn_dev_para");
        spec["relay_chain"] = json!("dev");
        spec["para_id"] = json!(2000);
    }
    println!("{}", serde_json::to_string_pretty(&spec)?);
    Ok(())
}
