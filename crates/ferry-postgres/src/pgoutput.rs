//! A decoder for PostgreSQL's `pgoutput` logical replication protocol, version 1.
//!
//! Each replication message carries one pgoutput message:
//!
//! ```text
//!   'R' relation   id:u32 namespace:str name:str identity:u8 ncols:u16 (flags:u8 name:str type:u32 typmod:i32)*
//!   'I' insert     id:u32 'N' tuple
//!   'U' update     id:u32 [('K' | 'O') tuple] 'N' tuple
//!   'D' delete     id:u32 ('K' | 'O') tuple
//!   'T' truncate   nrels:u32 options:u8 id:u32*          options: 1 = cascade, 2 = restart identity
//!   tuple          ncols:u16 ('n' | 'u' | 't' len:u32 bytes | 'b' len:u32 bytes)*
//! ```
//!
//! 'K' carries the old key (the key changed), 'O' the whole old row (REPLICA IDENTITY FULL).
//! 'u' marks an unchanged TOASTed value that is not in the WAL. Begin, commit, origin, type and
//! logical messages are recognised and skipped here (the transport reports begin and commit).
//! See <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

use ferry_core::{Error, Result};

/// One column of a relation message.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    /// The type's modifier (`varchar(64)`'s length, `numeric(20,6)`'s precision), -1 for none.
    pub type_modifier: i32,
}

/// A column value in a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum TupleValue {
    Null,
    /// An unchanged TOASTed value, not sent.
    Unchanged,
    Text(String),
    Binary(Vec<u8>),
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Relation {
        id: u32,
        namespace: String,
        name: String,
        columns: Vec<RelationColumn>,
    },
    Insert {
        relation: u32,
        new: Vec<TupleValue>,
    },
    Update {
        relation: u32,
        old: Option<Vec<TupleValue>>,
        /// True when `old` is the whole old row (REPLICA IDENTITY FULL, marker 'O'; its large
        /// values are inline), false when it holds the key only ('K').
        old_is_full: bool,
        new: Vec<TupleValue>,
    },
    Delete {
        relation: u32,
        old: Vec<TupleValue>,
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// The transaction being decoded was written under this replication origin.
    Origin {
        name: String,
    },
    /// Begin, commit, type, logical message: nothing to apply.
    Skipped(u8),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

fn malformed(what: &str) -> Error {
    Error::definite(
        "pgoutput.malformed",
        format!("malformed pgoutput message: {what}"),
    )
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < count {
            return Err(malformed("truncated"));
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("two bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("four bytes"),
        ))
    }

    fn string(&mut self) -> Result<String> {
        let end = self
            .bytes
            .iter()
            .position(|byte| *byte == 0)
            .ok_or_else(|| malformed("unterminated string"))?;
        let text = std::str::from_utf8(&self.bytes[..end])
            .map_err(|_| malformed("string is not UTF-8"))?
            .to_string();
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<TupleValue>> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(count as usize);
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                b't' => {
                    let length = self.u32()? as usize;
                    let bytes = self.take(length)?;
                    TupleValue::Text(
                        std::str::from_utf8(bytes)
                            .map_err(|_| malformed("text value is not UTF-8"))?
                            .to_string(),
                    )
                }
                b'b' => {
                    let length = self.u32()? as usize;
                    TupleValue::Binary(self.take(length)?.to_vec())
                }
                other => {
                    return Err(malformed(&format!(
                        "unknown tuple value kind {:?}",
                        other as char
                    )))
                }
            });
        }
        Ok(values)
    }
}

/// Decodes one pgoutput message.
pub fn decode(bytes: &[u8]) -> Result<Message> {
    let mut reader = Reader { bytes };
    let tag = reader.u8()?;
    Ok(match tag {
        b'R' => {
            let id = reader.u32()?;
            let namespace = reader.string()?;
            let name = reader.string()?;
            let _identity = reader.u8()?;
            let count = reader.u16()?;
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let flags = reader.u8()?;
                let name = reader.string()?;
                let type_oid = reader.u32()?;
                let type_modifier = reader.u32()? as i32;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name,
                    type_oid,
                    type_modifier,
                });
            }
            Message::Relation {
                id,
                namespace,
                name,
                columns,
            }
        }
        b'I' => {
            let relation = reader.u32()?;
            match reader.u8()? {
                b'N' => Message::Insert {
                    relation,
                    new: reader.tuple()?,
                },
                other => {
                    return Err(malformed(&format!(
                        "insert without new tuple ({:?})",
                        other as char
                    )))
                }
            }
        }
        b'U' => {
            let relation = reader.u32()?;
            let mut old = None;
            let mut marker = reader.u8()?;
            let old_is_full = marker == b'O';
            if marker == b'K' || marker == b'O' {
                old = Some(reader.tuple()?);
                marker = reader.u8()?;
            }
            if marker != b'N' {
                return Err(malformed("update without new tuple"));
            }
            Message::Update {
                relation,
                old,
                old_is_full,
                new: reader.tuple()?,
            }
        }
        b'D' => {
            let relation = reader.u32()?;
            match reader.u8()? {
                b'K' | b'O' => Message::Delete {
                    relation,
                    old: reader.tuple()?,
                },
                other => {
                    return Err(malformed(&format!(
                        "delete without old tuple ({:?})",
                        other as char
                    )))
                }
            }
        }
        b'T' => {
            let count = reader.u32()?;
            let options = reader.u8()?;
            let relations = (0..count).map(|_| reader.u32()).collect::<Result<_>>()?;
            Message::Truncate {
                relations,
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
            }
        }
        b'O' => {
            reader.take(8)?;
            Message::Origin {
                name: reader.string()?,
            }
        }
        b'B' | b'C' | b'Y' | b'M' => Message::Skipped(tag),
        other => {
            return Err(malformed(&format!(
                "unknown message type {:?}",
                other as char
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(bytes: &mut Vec<u8>, text: &str) {
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(0);
    }

    #[test]
    fn decodes_relation_and_changes() {
        let mut relation = vec![b'R'];
        relation.extend_from_slice(&16384u32.to_be_bytes());
        string(&mut relation, "public");
        string(&mut relation, "t");
        relation.push(b'd');
        relation.extend_from_slice(&2u16.to_be_bytes());
        relation.push(1);
        string(&mut relation, "id");
        relation.extend_from_slice(&23u32.to_be_bytes());
        relation.extend_from_slice(&(-1i32).to_be_bytes());
        relation.push(0);
        string(&mut relation, "body");
        relation.extend_from_slice(&25u32.to_be_bytes());
        relation.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            decode(&relation).unwrap(),
            Message::Relation {
                id: 16384,
                namespace: "public".into(),
                name: "t".into(),
                columns: vec![
                    RelationColumn {
                        is_key: true,
                        name: "id".into(),
                        type_oid: 23,
                        type_modifier: -1
                    },
                    RelationColumn {
                        is_key: false,
                        name: "body".into(),
                        type_oid: 25,
                        type_modifier: -1
                    }
                ],
            }
        );

        let mut update = vec![b'U'];
        update.extend_from_slice(&16384u32.to_be_bytes());
        update.push(b'K');
        update.extend_from_slice(&2u16.to_be_bytes());
        update.extend_from_slice(b"t\0\0\0\x017n");
        update.push(b'N');
        update.extend_from_slice(&2u16.to_be_bytes());
        update.extend_from_slice(b"t\0\0\0\x018u");
        assert_eq!(
            decode(&update).unwrap(),
            Message::Update {
                relation: 16384,
                old: Some(vec![TupleValue::Text("7".into()), TupleValue::Null]),
                old_is_full: false,
                new: vec![TupleValue::Text("8".into()), TupleValue::Unchanged]
            }
        );

        let mut truncate = vec![b'T'];
        truncate.extend_from_slice(&2u32.to_be_bytes());
        truncate.push(3);
        truncate.extend_from_slice(&1u32.to_be_bytes());
        truncate.extend_from_slice(&2u32.to_be_bytes());
        assert_eq!(
            decode(&truncate).unwrap(),
            Message::Truncate {
                relations: vec![1, 2],
                cascade: true,
                restart_identity: true
            }
        );
    }

    #[test]
    fn truncated_and_unknown_messages_are_errors_not_panics() {
        assert_eq!(decode(b"").unwrap_err().code(), "pgoutput.malformed");
        assert_eq!(decode(b"I\0\0").unwrap_err().code(), "pgoutput.malformed");
        assert_eq!(
            decode(b"I\0\0\0\x01N\0\x01t\0\0\0\x09ab")
                .unwrap_err()
                .code(),
            "pgoutput.malformed"
        );
        assert_eq!(decode(b"Z").unwrap_err().code(), "pgoutput.malformed");
        assert_eq!(
            decode(b"B\0\0\0\0\0\0\0\0").unwrap(),
            Message::Skipped(b'B')
        );
        assert_eq!(
            decode(b"O\0\0\0\0\0\0\0\x07ferry_a\0").unwrap(),
            Message::Origin {
                name: "ferry_a".into()
            }
        );
        assert_eq!(
            decode(b"O\0\0\0\0\0\0\0\x07ferry_a").unwrap_err().code(),
            "pgoutput.malformed"
        );
    }
}
