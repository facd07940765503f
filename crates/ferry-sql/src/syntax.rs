//! Small parsers both connectors need: MySQL type syntax (the PostgreSQL target translates MySQL
//! definitions) and the `%XX` escapes of connection URLs. Pure functions.

/// Decodes `%XX` escapes; `None` when an escape is incomplete or the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut output = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            output.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            output.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(output).ok()
}

/// The text inside the first parentheses of a column type: `10,2` of `decimal(10,2)`.
pub fn modifier(column_type: &str) -> Option<&str> {
    let start = column_type.find('(')?;
    let end = column_type.rfind(')')?;
    column_type.get(start + 1..end)
}

/// The labels of `enum('a','b''c')` or `set(...)`, unquoted, in definition order.
pub fn labels(column_type: &str) -> Vec<String> {
    let Some(inside) = modifier(column_type) else {
        return Vec::new();
    };
    let mut labels = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut characters = inside.chars().peekable();
    while let Some(character) = characters.next() {
        match (quoted, character) {
            (false, '\'') => quoted = true,
            (true, '\'') if characters.peek() == Some(&'\'') => {
                current.push('\'');
                characters.next();
            }
            (true, '\\') => {
                if let Some(next) = characters.next() {
                    current.push(next);
                }
            }
            (true, '\'') => {
                quoted = false;
                labels.push(std::mem::take(&mut current));
            }
            (true, other) => current.push(other),
            (false, _) => {}
        }
    }
    labels
}
