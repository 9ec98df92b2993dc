//! Prints any serialisable settings value as `section.key = value` lines, one per leaf, sorted
//! by key. Secret fields serialise as `<redacted>` themselves (see `values`), so
//! nothing here needs to know which keys are secret.

use serde::Serialize;
use serde_json::Value;

/// The lines for `value`, or one line saying it could not be printed.
pub fn key_value_lines<T: Serialize>(value: &T) -> String {
    let mut out = String::new();
    match serde_json::to_value(value) {
        Ok(tree) => walk("", &tree, &mut out),
        Err(e) => out.push_str(&format!("# the settings could not be printed: {e}\n")),
    }
    out
}

fn walk(prefix: &str, value: &Value, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                walk(&path, child, out);
            }
        }
        leaf => {
            out.push_str(prefix);
            out.push_str(" = ");
            out.push_str(&render_leaf(leaf));
            out.push('\n');
        }
    }
}

/// TOML-style values, so a line can be pasted into a file: strings quoted, numbers and lists
/// as they are. The markers `<unset>` and `<redacted>` stand unquoted, so they can never be
/// mistaken for a value.
fn render_leaf(value: &Value) -> String {
    match value {
        Value::Null => "<unset>".to_string(),
        Value::String(s) if s == super::values::REDACTED => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Inner {
        b: Option<u32>,
        c: &'static str,
    }

    #[derive(Serialize)]
    struct Outer {
        a: u32,
        inner: Inner,
        list: Vec<u32>,
    }

    #[test]
    fn one_line_per_leaf_sorted_by_key() {
        let text = key_value_lines(&Outer {
            a: 1,
            inner: Inner { b: None, c: "x" },
            list: vec![1, 2],
        });
        assert_eq!(
            text,
            "a = 1\ninner.b = <unset>\ninner.c = \"x\"\nlist = [1,2]\n"
        );
    }
}
