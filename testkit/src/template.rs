//! The configuration templates of testkit/templates/, shared with the Python lab scripts
//! (testkit/python/mifsec_testkit.py renders the same files by the same rules).
//!
//! A placeholder is `@NAME@` (a value must be given) or `@NAME=default@`; `NAME` is upper
//! case letters, digits and `_`. Rendering panics on a name the template does not have and
//! on a placeholder left without a value. A line that holds only a placeholder and renders
//! empty is left out.

/// One template file.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// Its file name in testkit/templates/.
    pub name: &'static str,
    /// Its text.
    pub text: &'static str,
}

/// The template file `$name` of testkit/templates/.
macro_rules! template {
    ($name:literal) => {
        Template {
            name: $name,
            text: include_str!(concat!("../templates/", $name)),
        }
    };
}

/// The strongSwan gateway `rw` (swanctl.conf).
pub const SWANCTL_GATEWAY: Template = template!("swanctl-gateway.conf");
/// The strongSwan client `home` (swanctl.conf).
pub const SWANCTL_CLIENT: Template = template!("swanctl-client.conf");
/// mifsec as the client `home`.
pub const MIFSEC_CLIENT: Template = template!("mifsec-client.toml");
/// mifsec as the gateway `rw`.
pub const MIFSEC_GATEWAY: Template = template!("mifsec-gateway.toml");
/// mifsec as the client `home` of the roaming lab (`crate::roam`): two links.
pub const MIFSEC_ROAM_CLIENT: Template = template!("mifsec-roam-client.toml");
/// mifsec as the client `mif` of the multi-interface lab (`crate::mif`): links c1, c2.
pub const MIFSEC_MIF_CLIENT: Template = template!("mifsec-mif-client.toml");
/// mifsec as the gateway `mif` of the multi-interface lab: links g1, g2.
pub const MIFSEC_MIF_GATEWAY: Template = template!("mifsec-mif-gateway.toml");
/// Every template.
pub const ALL: [Template; 7] = [
    SWANCTL_GATEWAY,
    SWANCTL_CLIENT,
    MIFSEC_CLIENT,
    MIFSEC_GATEWAY,
    MIFSEC_ROAM_CLIENT,
    MIFSEC_MIF_CLIENT,
    MIFSEC_MIF_GATEWAY,
];

/// One placeholder: where it stands in the text, its name and its default.
struct Slot<'a> {
    start: usize,
    end: usize,
    name: &'a str,
    default: Option<&'a str>,
}

fn slots(text: &str) -> Vec<Slot<'_>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find('@').map(|i| from + i) {
        let Some(j) = text[i + 1..].find('@').map(|j| i + 1 + j) else {
            break;
        };
        let inner = &text[i + 1..j];
        let (name, default) = match inner.split_once('=') {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let is_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && default.is_none_or(|d| !d.contains('\n'));
        if is_name {
            out.push(Slot {
                start: i,
                end: j + 1,
                name,
                default,
            });
            from = j + 1;
        } else {
            from = i + 1;
        }
    }
    out
}

impl Template {
    /// The names of its placeholders, in order (a name once).
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for s in slots(self.text) {
            if !names.contains(&s.name) {
                names.push(s.name);
            }
        }
        names
    }

    /// The text with `vars` (name, value) put in; of two values for one name, the first.
    pub fn render(&self, vars: &[(&str, &str)]) -> String {
        for (k, _) in vars {
            assert!(
                self.names().contains(k),
                "{}: no placeholder @{k}@ (it has {:?})",
                self.name,
                self.names()
            );
        }
        let mut out = String::with_capacity(self.text.len());
        let mut at = 0;
        for s in slots(self.text) {
            let value = vars
                .iter()
                .find(|(k, _)| *k == s.name)
                .map(|(_, v)| *v)
                .or(s.default)
                .unwrap_or_else(|| panic!("{}: no value for @{}@", self.name, s.name));
            let line_start = self.text[..s.start].rfind('\n').map_or(0, |i| i + 1);
            let alone = self.text[line_start..s.start].trim().is_empty()
                && self.text[s.end..]
                    .split('\n')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .is_empty();
            if value.is_empty() && alone {
                // Leave the whole line out, its newline included.
                out.push_str(&self.text[at..line_start]);
                at = self.text[s.end..]
                    .find('\n')
                    .map_or(self.text.len(), |i| s.end + i + 1);
            } else {
                out.push_str(&self.text[at..s.start]);
                out.push_str(value);
                at = s.end;
            }
        }
        out.push_str(&self.text[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Template = Template {
        name: "t",
        text: "a = @A@\n@EXTRA=@\nb = \"@B=two@\"\nmail@example\n",
    };

    #[test]
    fn values_defaults_and_empty_lines() {
        assert_eq!(T.names(), ["A", "EXTRA", "B"]);
        assert_eq!(
            T.render(&[("A", "1")]),
            "a = 1\nb = \"two\"\nmail@example\n"
        );
        assert_eq!(
            T.render(&[("A", "1"), ("EXTRA", "x = 3\ny = 4"), ("B", "b")]),
            "a = 1\nx = 3\ny = 4\nb = \"b\"\nmail@example\n"
        );
    }

    #[test]
    #[should_panic(expected = "no value for @A@")]
    fn a_placeholder_without_value_is_refused() {
        T.render(&[]);
    }

    #[test]
    #[should_panic(expected = "no placeholder @C@")]
    fn an_unknown_name_is_refused() {
        T.render(&[("A", "1"), ("C", "3")]);
    }

    /// The Python kit renders every template as this one does.
    #[test]
    fn the_python_kit_renders_the_same() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/mifsec_testkit.py");
        for t in ALL {
            for fill in [false, true] {
                let vars: Vec<(&str, String)> = t
                    .names()
                    .into_iter()
                    .filter(|n| fill || ["PSK", "SOCK", "DEV"].contains(n))
                    .map(|n| (n, format!("v-{n}\nsecond line of {n}")))
                    .collect();
                let args: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let out = std::process::Command::new("python3")
                    .arg(script)
                    .args(["render", t.name])
                    .args(&args)
                    .output()
                    .expect("running python3");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    t.render(&vars),
                    "{}",
                    t.name
                );
            }
        }
    }

    #[test]
    fn every_template_renders() {
        for t in ALL {
            let vars: Vec<(&str, &str)> = t
                .names()
                .into_iter()
                .filter(|n| ["PSK", "SOCK", "DEV"].contains(n))
                .map(|n| (n, "x"))
                .collect();
            let text = t.render(&vars);
            assert!(!text.contains('@'), "{}: {text}", t.name);
        }
    }
}
