//! DynamoDB's on-demand billing, applied to the requests the fault proxy forwards: read and
//! write units from item sizes, as the developer guide's "Read/write capacity mode" and "Item
//! sizes" pages define them. moto reports fixed capacities, so the proxy measures the items
//! itself: what a read returned, and for a write the item before and after (a consistent
//! GetItem of each key straight to moto, outside the proxy's own accounting).
//!
//! - An item's size is the sum of its attribute names' UTF-8 lengths and values' sizes: a
//!   string its UTF-8 length, a number 1 byte per two significant digits plus 1, binary its
//!   length, a boolean or null 1, a list or map 3 bytes plus 1 per element plus the elements
//!   (and, in a map, their names).
//! - A strongly consistent read is one unit per 4 KB (rounded up, at least 1), an eventually
//!   consistent one half that; a Query adds up the items it returned before rounding.
//! - A write is one unit per 1 KB of the larger of the item before and after (at least 1),
//!   also when its condition fails; each item of a transaction is billed twice, a
//!   `ConditionCheck` as a write of the item it checks.

use serde_json::{Map, Value};

/// Units one request consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    pub read_units: f64,
    pub write_units: f64,
}

impl std::ops::AddAssign for Capacity {
    fn add_assign(&mut self, other: Self) {
        self.read_units += other.read_units;
        self.write_units += other.write_units;
    }
}

fn value_size(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else { return 0 };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        "N" => inner.as_str().map_or(0, number_size),
        "B" => inner.as_str().map_or(0, |b| b.len() * 3 / 4),
        "BOOL" | "NULL" => 1,
        "SS" => inner.as_array().map_or(0, |a| a.iter().filter_map(Value::as_str).map(str::len).sum()),
        "NS" => inner.as_array().map_or(0, |a| a.iter().filter_map(Value::as_str).map(number_size).sum()),
        "BS" => inner.as_array().map_or(0, |a| a.iter().filter_map(Value::as_str).map(|b| b.len() * 3 / 4).sum()),
        "L" => 3 + inner.as_array().map_or(0, |a| a.iter().map(|v| 1 + value_size(v)).sum()),
        "M" => 3 + inner.as_object().map_or(0, |m| m.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum()),
        _ => 0,
    }
}

/// 1 byte per two significant digits, plus 1.
fn number_size(raw: &str) -> usize {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1);
    significant.div_ceil(2) + 1
}

/// The size DynamoDB bills for `item` (attribute name → typed value).
pub fn item_size(item: &Map<String, Value>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

pub fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// A write or check of one item: its table, its key, and whether it is a transaction's part.
#[derive(Debug, Clone)]
pub struct Written {
    pub table: String,
    pub key: Value,
    pub transactional: bool,
}

/// The key attributes of an item of this service's tables (`pk`/`sk`, or `keyId`).
fn key_of(spec: &Value) -> Value {
    if let Some(key) = spec.get("Key") {
        return key.clone();
    }
    let item = spec.get("Item").and_then(Value::as_object).cloned().unwrap_or_default();
    let names: &[&str] = if item.contains_key("pk") { &["pk", "sk"] } else { &["keyId"] };
    Value::Object(names.iter().filter_map(|n| item.get(*n).map(|v| ((*n).to_owned(), v.clone()))).collect())
}

/// The items a write request writes or checks.
pub fn written(operation: &str, body: &Value) -> Vec<Written> {
    let one = |spec: &Value, transactional: bool| Written {
        table: spec["TableName"].as_str().unwrap_or_default().to_owned(),
        key: key_of(spec),
        transactional,
    };
    match operation {
        "PutItem" | "UpdateItem" | "DeleteItem" => vec![one(body, false)],
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.as_object()?.values().next().map(|spec| one(spec, true)))
            .collect(),
        _ => Vec::new(),
    }
}

/// What a write cost, given each written item's size before and after it.
pub fn of_writes(items: &[(Written, usize, usize)]) -> Capacity {
    let write_units =
        items.iter().map(|(w, before, after)| write_units(*before.max(after)) * if w.transactional { 2.0 } else { 1.0 }).sum();
    Capacity { read_units: 0.0, write_units }
}

/// What a read cost, from its request and response bodies.
pub fn of_read(operation: &str, request: &Value, response: &Value) -> Capacity {
    let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
    let size = |item: &Value| item.as_object().map_or(0, item_size);
    let read_units = match operation {
        "GetItem" => read_units(size(&response["Item"]), consistent),
        "Query" | "Scan" => read_units(response["Items"].as_array().into_iter().flatten().map(size).sum(), consistent),
        "BatchGetItem" => {
            let mut units = 0.0;
            for (table, asked) in request["RequestItems"].as_object().into_iter().flatten() {
                let consistent = asked["ConsistentRead"].as_bool().unwrap_or(false);
                let returned = response["Responses"][table].as_array().cloned().unwrap_or_default();
                let requested = asked["Keys"].as_array().map_or(0, Vec::len);
                let unprocessed = response["UnprocessedKeys"][table]["Keys"].as_array().map_or(0, Vec::len);
                units += returned.iter().map(|item| read_units(size(item), consistent)).sum::<f64>();
                // A key asked for and not found still costs the minimum.
                units += requested.saturating_sub(returned.len() + unprocessed) as f64 * read_units(0, consistent);
            }
            units
        }
        "TransactGetItems" => {
            response["Responses"].as_array().into_iter().flatten().map(|r| 2.0 * read_units(size(&r["Item"]), true)).sum()
        }
        _ => 0.0,
    };
    Capacity { read_units, write_units: 0.0 }
}
