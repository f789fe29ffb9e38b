//! The Vault HTTP API's replies, read without leaving values in ordinary strings: every
//! string value lands in a `SecretBytes` (zeroized on drop), maps stay maps.

use std::collections::BTreeMap;
use std::fmt;

use jitc_protocol::SecretBytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// One JSON value of a reply's `data`.
pub enum Field {
    Value(SecretBytes),
    Map(BTreeMap<String, Field>),
    List(Vec<Field>),
    /// Null, or anything else no reference can name.
    Other,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Value(_) => f.write_str("[redacted]"),
            Field::Map(m) => f.debug_map().entries(m.iter()).finish(),
            Field::List(l) => f.debug_list().entries(l.iter()).finish(),
            Field::Other => f.write_str("Other"),
        }
    }
}

impl Field {
    pub fn get(&self, key: &str) -> Option<&Field> {
        match self {
            Field::Map(m) => m.get(key),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Field::Value(v) => Some(v.expose()),
            _ => None,
        }
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        Ok(Field::Value(SecretBytes::from_slice(v.as_bytes())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field, E> {
        Ok(Field::Value(SecretBytes::from_slice(
            v.to_string().as_bytes(),
        )))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Field, E> {
        Ok(Field::Value(SecretBytes::from_slice(
            v.to_string().as_bytes(),
        )))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Field, E> {
        Ok(Field::Value(SecretBytes::from_slice(
            v.to_string().as_bytes(),
        )))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field, E> {
        Ok(Field::Value(SecretBytes::from_slice(
            v.to_string().as_bytes(),
        )))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
        Ok(Field::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Field, E> {
        Ok(Field::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Field>()? {
            out.push(v);
        }
        Ok(Field::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let v: Field = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Field::Map(out))
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

/// A reply of the API (the fields jitc reads).
#[derive(Debug, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub lease_id: String,
    #[serde(default)]
    pub renewable: bool,
    #[serde(default)]
    pub lease_duration: u64,
    pub data: Option<Field>,
    pub auth: Option<AuthReply>,
}

#[derive(Deserialize)]
pub struct AuthReply {
    pub client_token: Field,
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default)]
    pub renewable: bool,
}

impl fmt::Debug for AuthReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthReply([redacted], {} s)", self.lease_duration)
    }
}

/// An error reply's messages (`{"errors": [...]}`), which never carry values.
#[derive(Debug, Deserialize)]
pub struct Errors {
    #[serde(default)]
    pub errors: Vec<String>,
}
