//! `lancefleet key`: makes API keys and their configuration entries. The server keeps only
//! a key's SHA-256 digest, so the key itself is shown once, here, and never written to a
//! file by this command.

use std::io::BufRead;

use lancefleet_common::config::{ApiKey, Role, key_digest};

/// Subcommands of `key`.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Makes a random key: prints its `[[keys]]` entry (for `auth.keys_file`) on stdout and
    /// the key itself on stderr, so `lancefleet key new ... >> keys.toml` never stores it.
    New(NewKeyArgs),
    /// Reads a key from stdin and prints its SHA-256 digest (the `sha256` of its entry).
    Hash,
}

/// Flags of `key new`.
#[derive(Debug, clap::Args)]
pub struct NewKeyArgs {
    /// The key's name in logs and audit lines.
    #[arg(long)]
    id: String,
    /// read-only, read-write or admin.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// A namespace or table id (`sales`, `sales$orders`) the key may reach; repeat for
    /// several. None: every table.
    #[arg(long)]
    scope: Vec<String>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::from(text))
        .map_err(|_| format!("unknown role '{text}'; one of read-only, read-write, admin"))
}

/// Runs a `key` subcommand.
pub fn run(command: KeyCommand) -> Result<(), String> {
    match command {
        KeyCommand::New(args) => {
            let key = format!("lf_{}", hex_of(&rand::random::<[u8; 32]>()));
            let entry = ApiKey { id: args.id, sha256: key_digest(&key), role: args.role, scope: args.scope };
            println!("{}", entry_toml(&entry));
            eprintln!("API key '{}' ({}), shown only now: {key}", entry.id, entry.role.as_str());
            Ok(())
        }
        KeyCommand::Hash => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map_err(|error| format!("cannot read stdin: {error}"))?;
            let key = line.trim();
            if key.is_empty() {
                return Err("no key on stdin".into());
            }
            println!("{}", key_digest(key));
            Ok(())
        }
    }
}

/// `entry` as a `[[keys]]` table.
fn entry_toml(entry: &ApiKey) -> String {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let mut toml = format!(
        "[[keys]]\nid = {}\nsha256 = {}\nrole = {}",
        quoted(&entry.id),
        quoted(&entry.sha256),
        quoted(entry.role.as_str())
    );
    if !entry.scope.is_empty() {
        let scope = entry.scope.iter().map(|item| quoted(item)).collect::<Vec<_>>().join(", ");
        toml.push_str(&format!("\nscope = [{scope}]"));
    }
    toml
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_toml_tables_with_the_keys_digest() {
        let entry =
            ApiKey { id: "ci".into(), sha256: key_digest("k"), role: Role::ReadOnly, scope: vec!["a$b".into()] };
        let text = entry_toml(&entry);
        assert!(text.starts_with("[[keys]]\nid = \"ci\"\nsha256 = \""), "{text}");
        assert!(text.ends_with("role = \"read-only\"\nscope = [\"a$b\"]"), "{text}");
        assert_eq!(parse_role("admin"), Ok(Role::Admin));
        assert!(parse_role("root").is_err());
    }
}
