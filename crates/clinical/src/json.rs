//! A JSON tree that borrows its strings from the input, for the FHIR parser.
//!
//! `serde_json::Value` copies every key and string into its own allocation and keeps objects
//! in B-trees; building and dropping those trees was most of the FHIR check's time. This tree
//! is read by the same `serde_json` reader (same grammar, same recursion limit), but strings
//! without escapes stay slices of the input and objects are small vectors in document order.
//!
//! It is also stricter: an object with a repeated key is refused (RFC 8259 §4 leaves the
//! meaning open, and a reader that keeps the first copy and one that keeps the last would
//! see two different records in the same file).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json` reads it.
    Number(serde_json::Number),
    /// A string, borrowed from the input unless it had escapes.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object.
    Object(Map<'a>),
}

/// A JSON object: its members in document order, keys unique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map<'a>(Vec<(Cow<'a, str>, Value<'a>)>);

impl<'a> Map<'a> {
    /// The value of member `k`.
    pub fn get(&self, k: &str) -> Option<&Value<'a>> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }

    /// Whether member `k` is present.
    pub fn contains_key(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    /// The members' values, in document order.
    pub fn values(&self) -> impl Iterator<Item = &Value<'a>> {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<'a> Value<'a> {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Map<'a>> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The array, if this is one.
    pub fn as_array(&self) -> Option<&Vec<Value<'a>>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Whether this is a number.
    pub fn is_number(&self) -> bool {
        matches!(self, Value::Number(_))
    }
}

/// As JSON for scalars (strings quoted and escaped), shortened for arrays and objects: only
/// refusal reasons print values.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => {
                f.write_str(&serde_json::to_string(s.as_ref()).map_err(|_| fmt::Error)?)
            }
            Value::Array(a) => write!(f, "[… {} items]", a.len()),
            Value::Object(o) => write!(f, "{{… {} members}}", o.0.len()),
        }
    }
}

/// A string that stays borrowed when the reader can lend it.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The key `serde_json` uses to pass a number's text through `deserialize_any` when built
/// with `arbitrary_precision`.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Objects up to this many members are checked for repeated keys pairwise; larger ones by
/// sorting, so a hostile object cannot make the check quadratic.
const PAIRWISE: usize = 16;

fn repeated_key<'m>(members: &'m [(Cow<'_, str>, Value<'_>)]) -> Option<&'m str> {
    if members.len() <= PAIRWISE {
        for (i, (k, _)) in members.iter().enumerate() {
            if members[..i].iter().any(|(j, _)| j == k) {
                return Some(k);
            }
        }
        return None;
    }
    let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value<'de>, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value<'de>, E> {
                Ok(Value::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value<'de>, E> {
                Ok(Value::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value<'de>, E> {
                serde_json::Number::from_f64(v)
                    .map(Value::Number)
                    .ok_or_else(|| E::custom("a number that is not finite"))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value<'de>, E> {
                Ok(Value::String(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value<'de>, E> {
                Ok(Value::String(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value<'de>, E> {
                Ok(Value::String(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(Str(k)) = map.next_key()? {
                    // With serde_json's `arbitrary_precision` (another crate of the build
                    // turns it on) a number arrives as this one-member map holding its text.
                    if members.is_empty() && k == NUMBER_TOKEN {
                        let Str(text) = map.next_value()?;
                        let n: serde_json::Number = text.parse().map_err(de::Error::custom)?;
                        return Ok(Value::Number(n));
                    }
                    let v: Value<'de> = map.next_value()?;
                    members.push((k, v));
                }
                if let Some(k) = repeated_key(&members) {
                    return Err(de::Error::custom(format!("key {k:?} appears twice")));
                }
                Ok(Value::Object(Map(members)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_borrowed_unless_escaped_and_numbers_print_as_serde_json_does() {
        let text = r#"{"a":"plain","b":"esc\"aped","n":[1,-2,1.50,1e3]}"#;
        let v: Value = serde_json::from_str(text).expect("parses");
        let o = v.as_object().expect("object");
        assert!(matches!(
            o.get("a"),
            Some(Value::String(Cow::Borrowed("plain")))
        ));
        assert_eq!(o.get("b").and_then(Value::as_str), Some("esc\"aped"));
        let theirs: serde_json::Value = serde_json::from_str(text).expect("parses");
        let ours: Vec<String> = o
            .get("n")
            .and_then(Value::as_array)
            .expect("array")
            .iter()
            .map(ToString::to_string)
            .collect();
        let want: Vec<String> = theirs["n"]
            .as_array()
            .expect("array")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ours, want);
        assert_eq!(
            o.get("b").map(ToString::to_string).as_deref(),
            Some(r#""esc\"aped""#)
        );
    }

    #[test]
    fn repeated_keys_are_refused_in_small_and_large_objects() {
        assert!(serde_json::from_str::<Value>(r#"{"a":1,"a":2}"#).is_err());
        let mut big: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(serde_json::from_str::<Value>(&format!("{{{}}}", big.join(","))).is_ok());
        big.push("\"k7\":0".into());
        let e =
            serde_json::from_str::<Value>(&format!("{{{}}}", big.join(","))).expect_err("repeated");
        assert!(e.to_string().contains("\"k7\" appears twice"), "{e}");
    }
}
