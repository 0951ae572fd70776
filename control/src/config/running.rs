//! The running configuration as a TOML document: what `mifsec showconf` prints and what
//! `mifsec ctl reload` compares the file with.
//!
//! [`RunningDoc`] is the file as it was last loaded (in its order: connections, children and
//! paths keep it), with every path given its name (`name = "pN"` where the file left it
//! out, so that removing one does not rename the others), and then every `ctl` change made
//! since applied to it (interfaces added and removed, paths added and removed, policies,
//! handovers). Comments and the spelling of numbers are not kept.
//!
//! Key material (`sa.*.key_out`, `sa.*.key_in`, `secrets.*.secret`) is not kept in the
//! document: it is taken out into [`Zeroizing`] strings when the file is loaded and put
//! back only when [`RunningDoc::render`] is asked for it (the control socket does so for
//! the clients that may read keys); otherwise each is written as [`REDACTED`].

use std::collections::BTreeMap;

use toml::{Table, Value};
use zeroize::Zeroizing;

/// What a secret is replaced with in the output for a client that may not read keys. Such
/// an output does not pass `mifsec check` (the value is no key).
pub const REDACTED: &str = "<redacted>";

/// The running configuration: the document without its secrets, and the secrets.
#[derive(Clone, Default)]
pub struct RunningDoc {
    table: Table,
    /// Dotted key (`sa.tunnel.key_out`, `secrets.ike-1.secret`) to the value as written.
    secrets: BTreeMap<String, Zeroizing<String>>,
}

impl std::fmt::Debug for RunningDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningDoc")
            .field("sections", &self.table.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The secret keys of a section: `(section, key)`.
const SECRET_KEYS: [(&str, &str); 3] = [("sa", "key_out"), ("sa", "key_in"), ("secrets", "secret")];

impl RunningDoc {
    /// The document of `text`, a file that [`super::parse`] accepted (so it is TOML).
    pub fn from_text(text: &str) -> Result<RunningDoc, String> {
        let mut table: Table = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut secrets = BTreeMap::new();
        for (section, key) in SECRET_KEYS {
            let Some(Value::Table(entries)) = table.get_mut(section) else {
                continue;
            };
            for (name, entry) in entries.iter_mut() {
                let Some(v) = entry.as_table_mut().and_then(|t| t.get_mut(key)) else {
                    continue;
                };
                if let Value::String(s) = v {
                    let taken = Zeroizing::new(std::mem::take(s));
                    secrets.insert(format!("{section}.{name}.{key}"), taken);
                    *v = Value::String(REDACTED.into());
                }
            }
        }
        let mut doc = RunningDoc { table, secrets };
        for sa in doc.sa_names() {
            if let Some(paths) = doc.paths_mut(&sa) {
                for (i, p) in paths.iter_mut().enumerate() {
                    if let Some(t) = p.as_table_mut() {
                        if !t.contains_key("name") {
                            // After `interface`, `remote`: keep it readable at the front.
                            let mut named = Table::new();
                            named.insert("name".into(), Value::String(format!("p{}", i + 1)));
                            named.extend(std::mem::take(t));
                            *t = named;
                        }
                    }
                }
            }
        }
        Ok(doc)
    }

    /// The document in the file's syntax; with `secrets`, the key material as written,
    /// else [`REDACTED`] in its place.
    ///
    /// A manual SA's paths on an interface that is no longer in `[interfaces]` (`ctl
    /// remove-interface`) are left out: they carry nothing while it is gone, and a file
    /// that names a missing interface would not load. The document keeps them, as the
    /// engine does, so that `ctl add-interface` brings them back and a reload compares
    /// with what the engine has.
    pub fn render(&self, secrets: bool) -> String {
        let mut t = self.table.clone();
        let interfaces: Vec<String> = self.names("interfaces");
        if let Some(sas) = t.get_mut("sa").and_then(Value::as_table_mut) {
            for (_, sa) in sas.iter_mut() {
                if let Some(Value::Array(paths)) =
                    sa.as_table_mut().and_then(|t| t.get_mut("paths"))
                {
                    paths.retain(|p| {
                        p.get("interface")
                            .and_then(Value::as_str)
                            .is_none_or(|i| interfaces.iter().any(|n| n == i))
                    });
                }
            }
        }
        if secrets {
            for (dotted, value) in &self.secrets {
                let mut parts = dotted.splitn(3, '.');
                let (Some(section), Some(name), Some(key)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if let Some(entry) = t
                    .get_mut(section)
                    .and_then(Value::as_table_mut)
                    .and_then(|s| s.get_mut(name))
                    .and_then(Value::as_table_mut)
                {
                    entry.insert(key.into(), Value::String(value.as_str().to_owned()));
                }
            }
        }
        let out = toml::to_string(&t).unwrap_or_default();
        // The document held the secrets only for this output; `t` drops its copies here,
        // which are plain strings (the returned text goes to the client anyway).
        drop(t);
        out
    }

    /// The top-level section `name` (`dataplane`, `interfaces`, `sa`, ...).
    pub fn section(&self, name: &str) -> Option<&Table> {
        self.table.get(name).and_then(Value::as_table)
    }

    /// The entry `name` of section `section` (`interfaces.wan`, `sa.tunnel`), secrets
    /// redacted.
    pub fn entry(&self, section: &str, name: &str) -> Option<&Table> {
        self.section(section)
            .and_then(|s| s.get(name))
            .and_then(Value::as_table)
    }

    /// The names in section `section`, in order.
    pub fn names(&self, section: &str) -> Vec<String> {
        self.section(section)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The secret at `section.name.key`, if any.
    pub fn secret(&self, section: &str, name: &str, key: &str) -> Option<&str> {
        self.secrets
            .get(&format!("{section}.{name}.{key}"))
            .map(|s| s.as_str())
    }

    /// Whether the secrets of entry `section.name` are the same in both documents.
    pub fn same_secrets(&self, other: &RunningDoc, section: &str, name: &str) -> bool {
        SECRET_KEYS
            .iter()
            .filter(|(s, _)| *s == section)
            .all(|(_, key)| self.secret(section, name, key) == other.secret(section, name, key))
    }

    /// Whether every secret of section `section` is the same in both documents.
    pub fn same_section_secrets(&self, other: &RunningDoc, section: &str) -> bool {
        let pick = |d: &RunningDoc| {
            d.secrets
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{section}.")))
                .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
                .map(|(k, v)| (k, Zeroizing::new(v)))
                .collect::<Vec<_>>()
        };
        pick(self) == pick(other)
    }

    fn sa_names(&self) -> Vec<String> {
        self.names("sa")
    }

    fn sa_mut(&mut self, sa: &str) -> Option<&mut Table> {
        self.table
            .get_mut("sa")
            .and_then(Value::as_table_mut)
            .and_then(|s| s.get_mut(sa))
            .and_then(Value::as_table_mut)
    }

    fn paths_mut(&mut self, sa: &str) -> Option<&mut Vec<Value>> {
        self.sa_mut(sa)
            .and_then(|t| t.get_mut("paths"))
            .and_then(Value::as_array_mut)
    }

    fn section_mut(&mut self, name: &str) -> &mut Table {
        let v = self
            .table
            .entry(name.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !v.is_table() {
            *v = Value::Table(Table::new());
        }
        match v {
            Value::Table(t) => t,
            _ => unreachable!("made a table above"),
        }
    }

    // --- `ctl` changes ---------------------------------------------------------------

    /// `ctl add-interface`: `[interfaces.NAME]` with these keys.
    pub fn add_interface(
        &mut self,
        name: &str,
        address: &str,
        device: Option<&str>,
        port: Option<u16>,
    ) {
        let mut t = Table::new();
        if let Some(d) = device {
            t.insert("device".into(), Value::String(d.into()));
        }
        t.insert("address".into(), Value::String(address.into()));
        if let Some(p) = port {
            t.insert("port".into(), Value::Integer(i64::from(p)));
        }
        self.section_mut("interfaces")
            .insert(name.into(), Value::Table(t));
    }

    /// `ctl remove-interface`: the section goes (paths naming it stay, as in the engine).
    pub fn remove_interface(&mut self, name: &str) {
        if let Some(s) = self
            .table
            .get_mut("interfaces")
            .and_then(Value::as_table_mut)
        {
            s.remove(name);
        }
    }

    /// `ctl policy` of a manual SA (IKE child SAs are not in the file).
    pub fn set_policy(&mut self, sa: &str, policy: &str) {
        if let Some(t) = self.sa_mut(sa) {
            t.insert("policy".into(), Value::String(policy.into()));
        }
    }

    /// `ctl add-path` on a manual SA: the path's table as the file would have it.
    pub fn add_path(&mut self, sa: &str, path: Table) {
        let Some(t) = self.sa_mut(sa) else {
            return;
        };
        let paths = t
            .entry("paths".to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = paths {
            a.push(Value::Table(path));
        }
    }

    /// `ctl remove-path` on a manual SA.
    pub fn remove_path(&mut self, sa: &str, name: &str) {
        if let Some(paths) = self.paths_mut(sa) {
            paths.retain(|p| p.get("name").and_then(Value::as_str) != Some(name));
        }
    }

    /// `ctl handover SA PATH`: PATH is the SA's only active path, the other active ones
    /// become standby (what the engine does, at once or after the probe).
    pub fn handover(&mut self, sa: &str, path: &str) {
        let Some(paths) = self.paths_mut(sa) else {
            return;
        };
        if !paths
            .iter()
            .any(|p| p.get("name").and_then(Value::as_str) == Some(path))
        {
            return;
        }
        for p in paths.iter_mut() {
            let Some(t) = p.as_table_mut() else { continue };
            let target = t.get("name").and_then(Value::as_str) == Some(path);
            let role = t.get("role").and_then(Value::as_str).unwrap_or("active");
            if target {
                t.insert("role".into(), Value::String("active".into()));
            } else if role == "active" {
                t.insert("role".into(), Value::String("standby".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[dataplane]
tun = "t0"

[interfaces.l1]
address = "198.18.1.2"

[sa.tunnel]
spi_out = 0x1001
key_out = "000102030405060708090a0b0c0d0e0f10111213"
spi_in = 0x2001
key_in = "101112131415161718191a1b1c1d1e1f20212223"
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]

[[sa.tunnel.paths]]
interface = "l1"
remote = "198.18.1.1:4500"

[[sa.tunnel.paths]]
name = "b"
interface = "l1"
remote = "198.18.1.3:4500"
role = "standby"
"#;

    #[test]
    fn secrets_are_kept_apart_and_redacted_unless_asked_for() {
        let doc = RunningDoc::from_text(FILE).unwrap();
        let redacted = doc.render(false);
        assert!(!redacted.contains("000102030405"), "{redacted}");
        assert!(
            redacted.contains(&format!("key_out = \"{REDACTED}\"")),
            "{redacted}"
        );
        let full = doc.render(true);
        assert!(full.contains("key_out = \"000102030405060708090a0b0c0d0e0f10111213\""));
        // Parsed again, the full output is the same configuration.
        let a = super::super::parse("a", FILE).unwrap();
        let b = super::super::parse("b", &full).unwrap();
        assert_eq!(super::super::summary(&a), super::super::summary(&b));
        assert_eq!(RunningDoc::from_text(&full).unwrap().render(true), full);
    }

    #[test]
    fn paths_on_a_removed_interface_are_left_out_until_it_is_back() {
        let mut doc = RunningDoc::from_text(FILE).unwrap();
        doc.add_interface("l2", "198.18.2.2", None, Some(4501));
        let mut p = Table::new();
        p.insert("name".into(), Value::String("c".into()));
        p.insert("interface".into(), Value::String("l2".into()));
        p.insert("remote".into(), Value::String("198.18.2.1:4500".into()));
        doc.add_path("tunnel", p);
        assert!(doc.render(true).contains("name = \"c\""));
        doc.remove_interface("l2");
        let text = doc.render(true);
        assert!(
            !text.contains("l2") && !text.contains("name = \"c\""),
            "{text}"
        );
        // What is shown loads: the SA's other paths, without the missing interface.
        let cfg = super::super::parse("x", &text).unwrap();
        assert!(!super::super::summary(&cfg).contains("l2"));
        // The document keeps the path, as the engine does: back with the interface.
        assert_eq!(
            doc.entry("sa", "tunnel").unwrap()["paths"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        doc.add_interface("l2", "198.18.2.2", None, Some(4501));
        assert!(doc.render(true).contains("name = \"c\""));
    }

    #[test]
    fn paths_get_their_names_and_ctl_changes_show() {
        let mut doc = RunningDoc::from_text(FILE).unwrap();
        let text = doc.render(true);
        assert!(text.contains("name = \"p1\""), "{text}");
        doc.handover("tunnel", "b");
        doc.set_policy("tunnel", "redundant");
        let mut p = Table::new();
        p.insert("name".into(), Value::String("c".into()));
        p.insert("interface".into(), Value::String("l2".into()));
        p.insert("remote".into(), Value::String("198.18.2.1:4500".into()));
        doc.add_interface("l2", "198.18.2.2", None, Some(4501));
        doc.add_path("tunnel", p);
        doc.remove_path("tunnel", "p1");
        let text = doc.render(true);
        let cfg = super::super::parse("x", &text).unwrap();
        let sa = &cfg.engine.sas[0];
        let paths: Vec<_> = sa.paths.iter().map(|p| (p.name.as_str(), p.role)).collect();
        assert_eq!(
            paths,
            [
                ("b", crate::dataplane::sa_table::Role::Active),
                ("c", crate::dataplane::sa_table::Role::Active)
            ]
        );
        assert_eq!(sa.policy, crate::dataplane::sa_table::Policy::Redundant);
        assert_eq!(cfg.engine.interfaces.len(), 2);
        doc.remove_interface("l2");
        assert!(!doc.render(false).contains("[interfaces.l2]"));
    }
}
