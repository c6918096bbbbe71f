//! Holds a config to the composed schema, in tests: the keywords the schema uses, enough to
//! keep the parser and the schema in step without a JSON Schema crate for it.

use serde_json::Value;

use super::schema;
use crate::registry::Registry;

/// The problems of a config text against the schema of the built-in kinds.
pub(crate) fn check(text: &str) -> Vec<String> {
    let root = schema(&Registry::builtin()).to_value();
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(err) => return vec![format!("not TOML: {err}")],
    };
    let instance = serde_json::to_value(table).unwrap_or_default();
    problems(&root, &root, &instance, "")
}

/// The problems of `instance` (at the dotted path `at`) against `schema`, whose `$ref`s point
/// into `root`'s `$defs`.
pub(crate) fn problems(root: &Value, schema: &Value, instance: &Value, at: &str) -> Vec<String> {
    let Some(schema) = schema.as_object() else {
        return match schema {
            Value::Bool(false) => vec![format!("{at}: not allowed")],
            _ => Vec::new(),
        };
    };
    let mut found = Vec::new();
    if let Some(Value::String(reference)) = schema.get("$ref") {
        let name = reference.trim_start_matches("#/$defs/");
        let target = &root["$defs"][name];
        assert!(target.is_object(), "dangling {reference}");
        found.extend(problems(root, target, instance, at));
    }
    if let Some(types) = schema.get("type") {
        if let Some(problem) = type_problem(types, instance, at) {
            found.push(problem);
            return found;
        }
    }
    found.extend(value_problems(schema, instance, at));
    if let Some(object) = instance.as_object() {
        found.extend(object_problems(root, schema, object, at));
    }
    if let (Some(items), Some(array)) = (schema.get("items"), instance.as_array()) {
        for (i, item) in array.iter().enumerate() {
            found.extend(problems(root, items, item, &format!("{at}[{i}]")));
        }
    }
    found.extend(alternative_problems(root, schema, instance, at));
    found
}

/// `type`: one name or a list of names.
fn type_problem(types: &Value, instance: &Value, at: &str) -> Option<String> {
    let types: Vec<&str> = match types {
        Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
        other => other.as_str().into_iter().collect(),
    };
    let is = |name: &str| match name {
        "null" => instance.is_null(),
        "boolean" => instance.is_boolean(),
        "integer" => instance.is_i64() || instance.is_u64(),
        "number" => instance.is_number(),
        "string" => instance.is_string(),
        "array" => instance.is_array(),
        "object" => instance.is_object(),
        _ => false,
    };
    let fits = types.iter().any(|name| is(name));
    (!fits).then(|| format!("{at}: expected {}", types.join(" or ")))
}

/// `const`, `enum` and `minimum`.
fn value_problems(
    schema: &serde_json::Map<String, Value>,
    instance: &Value,
    at: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(constant) = schema.get("const") {
        if constant != instance {
            found.push(format!("{at}: expected {constant}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(instance) {
            found.push(format!("{at}: expected one of {allowed:?}"));
        }
    }
    let minimum = schema.get("minimum").and_then(Value::as_f64);
    if let (Some(minimum), Some(number)) = (minimum, instance.as_f64()) {
        if number < minimum {
            found.push(format!("{at}: below {minimum}"));
        }
    }
    let maximum = schema.get("maximum").and_then(Value::as_f64);
    if let (Some(maximum), Some(number)) = (maximum, instance.as_f64()) {
        if number > maximum {
            found.push(format!("{at}: above {maximum}"));
        }
    }
    found
}

/// `properties`, `additionalProperties` and `required`.
fn object_problems(
    root: &Value,
    schema: &serde_json::Map<String, Value>,
    object: &serde_json::Map<String, Value>,
    at: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    let declared = schema.get("properties").and_then(Value::as_object);
    for (key, value) in object {
        let path = format!("{at}.{key}");
        let property = declared.and_then(|declared| declared.get(key));
        if let Some(property) = property.or(schema.get("additionalProperties")) {
            found.extend(problems(root, property, value, &path));
        }
    }
    let required = schema.get("required").and_then(Value::as_array);
    for key in required.into_iter().flatten() {
        if !key.as_str().is_some_and(|key| object.contains_key(key)) {
            found.push(format!("{at}: missing {key}"));
        }
    }
    found
}

/// `anyOf` (one fits) and `oneOf` (exactly one fits; for an entry that fits none, the misfits
/// of the variant of its own `kind`).
fn alternative_problems(
    root: &Value,
    schema: &serde_json::Map<String, Value>,
    instance: &Value,
    at: &str,
) -> Vec<String> {
    let each = |alternatives: &[Value]| -> Vec<Vec<String>> {
        alternatives
            .iter()
            .map(|s| problems(root, s, instance, at))
            .collect()
    };
    let mut found = Vec::new();
    if let Some(Value::Array(any)) = schema.get("anyOf") {
        let misfits = each(any);
        if !misfits.iter().any(Vec::is_empty) {
            found.extend(misfits.into_iter().flatten());
        }
    }
    if let Some(Value::Array(one)) = schema.get("oneOf") {
        let misfits = each(one);
        match misfits.iter().filter(|p| p.is_empty()).count() {
            1 => {}
            0 => {
                let kind = instance.get("kind").cloned().unwrap_or(Value::Null);
                let own = one
                    .iter()
                    .position(|s| s["properties"]["kind"]["const"] == kind);
                match own {
                    Some(i) => found.extend(misfits[i].iter().cloned()),
                    None => found.push(format!("{at}: no variant for kind {kind}")),
                }
            }
            n => found.push(format!("{at}: {n} variants match")),
        }
    }
    found
}
