//! Small parsers of MySQL type syntax that both connectors need (the PostgreSQL target
//! translates MySQL definitions). Pure functions.

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
