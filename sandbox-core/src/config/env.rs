//! Reads [`Config`](super::Config) from environment variables through serde, so that the
//! struct definitions are the single list of keys: `SANDBOX_BACKEND` is `backend`,
//! `SANDBOX_DOCKER_API_TIMEOUT_SECONDS` is `docker.api_timeout_seconds`, and an unknown
//! `SANDBOX_DOCKER_*` variable is an error naming it.

use serde::de::value::{Error as DeError, MapDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

/// One variable's value; parses numbers, booleans, enums and comma lists on demand.
#[derive(Clone)]
pub(super) struct EnvValue(pub(super) String);

macro_rules! parse_number {
    ($($method:ident => $visit:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let parsed = self.0.trim().parse().map_err(|_| {
                de::Error::custom(format!("expected a number, got `{}`", self.0))
            })?;
            visitor.$visit(parsed)
        })*
    };
}

impl<'de> de::Deserializer<'de> for EnvValue {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => visitor.visit_bool(true),
            "false" | "0" | "no" | "off" => visitor.visit_bool(false),
            _ => Err(de::Error::custom(format!(
                "expected true or false, got `{}`",
                self.0
            ))),
        }
    }

    parse_number! {
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16, deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64, deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64, deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.0.is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items: Vec<EnvValue> = self
            .0
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| EnvValue(s.to_string()))
            .collect();
        visitor.visit_seq(serde::de::value::SeqDeserializer::new(items.into_iter()))
    }

    forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier
        ignored_any
    }
}

impl IntoDeserializer<'_, DeError> for EnvValue {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// A top-level key: a plain value (`backend`) or a section (`docker`) of values.
pub(super) enum EnvNode {
    Value(EnvValue),
    Section(Vec<(String, EnvValue)>),
}

impl<'de> de::Deserializer<'de> for EnvNode {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self {
            EnvNode::Value(v) => v.deserialize_any(visitor),
            EnvNode::Section(fields) => visitor.visit_map(MapDeserializer::new(fields.into_iter())),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self {
            EnvNode::Value(v) => v.deserialize_enum(name, variants, visitor),
            EnvNode::Section(_) => Err(de::Error::custom("expected a value, found a section")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl IntoDeserializer<'_, DeError> for EnvNode {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}
