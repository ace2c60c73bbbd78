//! Table and namespace identifiers, validated before they ever become paths.
//!
//! The REST API names a table by its namespace components and name joined with `$`
//! (`ns1$ns2$table`); the root namespace is the single character `$`. A root-namespace
//! table lives where LanceDB OSS keeps it, `{root}/{table}.lance`; a namespaced table
//! where lance's directory namespace records it (see [`crate::catalog::namespaces`]).
//! Every component is checked against LanceDB's own rules: `[A-Za-z0-9._-]`, not empty,
//! not `.` or `..`. That leaves no room for path separators or traversal.

use std::fmt;

use crate::error::{EngineError, Result};

/// The separator of namespace components and the table name in REST identifiers.
pub const ID_DELIMITER: char = '$';
/// The directory suffix of a Lance table.
pub const TABLE_SUFFIX: &str = ".lance";
/// Longest table name LanceDB accepts.
pub const MAX_TABLE_NAME_LEN: usize = 128;
/// Longest namespace component LanceDB accepts.
pub const MAX_NAMESPACE_COMPONENT_LEN: usize = 64;
/// Deepest namespace nesting LanceDB accepts.
pub const MAX_NAMESPACE_DEPTH: usize = 10;

/// A validated namespace: zero components is the root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Namespace {
    components: Vec<String>,
}

/// A validated table identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId {
    namespace: Namespace,
    name: String,
}

impl Namespace {
    /// The root namespace.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a REST namespace id: `$` is the root, otherwise `$`-joined components.
    pub fn parse(id: &str) -> Result<Self> {
        if id == ID_DELIMITER.to_string() {
            return Ok(Self::root());
        }
        let components = id.split(ID_DELIMITER).map(str::to_string).collect::<Vec<_>>();
        Self::from_components(components, id)
    }

    fn from_components(components: Vec<String>, original: &str) -> Result<Self> {
        if components.len() > MAX_NAMESPACE_DEPTH {
            return Err(invalid(original, format!("namespaces nest at most {MAX_NAMESPACE_DEPTH} levels")));
        }
        for component in &components {
            validate_component(component, MAX_NAMESPACE_COMPONENT_LEN, "namespace component")
                .map_err(|reason| invalid(original, reason))?;
        }
        Ok(Self { components })
    }

    /// The components, outermost first.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// Whether this is the root namespace.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The enclosing namespace (the root's parent is the root).
    pub fn parent(&self) -> Self {
        let mut components = self.components.clone();
        components.pop();
        Self { components }
    }

    /// The child namespace `name`, validated.
    pub fn child(&self, name: &str) -> Result<Self> {
        let mut components = self.components.clone();
        components.push(name.to_string());
        Self::from_components(components, name)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.components.is_empty() {
            return write!(formatter, "{ID_DELIMITER}");
        }
        formatter.write_str(&self.components.join(&ID_DELIMITER.to_string()))
    }
}

impl TableId {
    /// The table `name` in `namespace`, validated.
    pub fn new(namespace: Namespace, name: &str) -> Result<Self> {
        validate_component(name, MAX_TABLE_NAME_LEN, "table name").map_err(|reason| invalid(name, reason))?;
        Ok(Self { namespace, name: name.to_string() })
    }

    /// Parses a REST table id (`name` or `ns1$ns2$name`).
    pub fn parse(id: &str) -> Result<Self> {
        let mut components = id.split(ID_DELIMITER).map(str::to_string).collect::<Vec<_>>();
        let name = components.pop().unwrap_or_default();
        validate_component(&name, MAX_TABLE_NAME_LEN, "table name").map_err(|reason| invalid(id, reason))?;
        let namespace = Namespace::from_components(components, id)?;
        Ok(Self { namespace, name })
    }

    /// The table's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The table name without namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace components, then the name (the id as the namespace spec lists it).
    pub fn components(&self) -> Vec<String> {
        let mut components = self.namespace.components.clone();
        components.push(self.name.clone());
        components
    }

    /// The directory of a root-namespace table under the storage root: `{name}.lance`.
    pub fn directory_name(&self) -> String {
        format!("{}{TABLE_SUFFIX}", self.name)
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for component in &self.namespace.components {
            write!(formatter, "{component}{ID_DELIMITER}")?;
        }
        formatter.write_str(&self.name)
    }
}

/// Returns the table name a storage entry holds, if it is a table directory.
pub fn table_name_of_entry(entry: &str) -> Option<&str> {
    let name = entry.trim_end_matches('/').strip_suffix(TABLE_SUFFIX)?;
    validate_component(name, MAX_TABLE_NAME_LEN, "table name").ok()?;
    Some(name)
}

fn validate_component(component: &str, max_len: usize, what: &str) -> std::result::Result<(), String> {
    if component.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if component == "." || component == ".." {
        return Err(format!("the {what} cannot be '{component}'"));
    }
    if component.len() > max_len {
        return Err(format!("the {what} is {} characters long, the limit is {max_len}", component.len()));
    }
    if let Some(bad) = component.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!(
            "the {what} contains {bad:?}; only letters, digits, underscores, hyphens and periods are allowed"
        ));
    }
    Ok(())
}

fn invalid(name: &str, reason: String) -> EngineError {
    EngineError::InvalidName { name: name.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_namespaced_ids_parse() {
        let plain = TableId::parse("my_table-1.v2").expect("valid");
        assert!(plain.namespace().components().is_empty());
        assert_eq!(plain.directory_name(), "my_table-1.v2.lance");

        let nested = TableId::parse("ns1$ns2$docs").expect("valid");
        assert_eq!(nested.namespace().components(), ["ns1", "ns2"]);
        assert_eq!(nested.name(), "docs");
        assert_eq!(nested.components(), ["ns1", "ns2", "docs"]);
        assert_eq!(nested.to_string(), "ns1$ns2$docs");
    }

    #[test]
    fn path_tricks_are_rejected() {
        for bad in ["", ".", "..", "a/b", "../etc", "a\\b", "a%2Fb", "a b", "ns$..$t", "$t", "t$", "caf\u{e9}"] {
            let error = TableId::parse(bad).expect_err(bad);
            assert!(matches!(error, EngineError::InvalidName { .. }), "{bad}: {error}");
        }
    }

    #[test]
    fn over_long_names_are_rejected_with_the_limit() {
        let long = "x".repeat(MAX_TABLE_NAME_LEN + 1);
        let error = TableId::parse(&long).expect_err("too long");
        assert!(error.to_string().contains("limit is 128"), "{error}");
        assert!(TableId::parse(&"x".repeat(MAX_TABLE_NAME_LEN)).is_ok());
    }

    #[test]
    fn root_namespace_is_a_dollar_sign() {
        assert_eq!(Namespace::parse("$").expect("root"), Namespace::root());
        assert_eq!(Namespace::parse("a$b").expect("nested").components(), ["a", "b"]);
        assert!(Namespace::parse("a$$b").is_err());
        let too_deep = ["n"; MAX_NAMESPACE_DEPTH + 1].join("$");
        assert!(Namespace::parse(&too_deep).is_err());
    }

    #[test]
    fn only_table_directories_are_listed() {
        assert_eq!(table_name_of_entry("docs.lance"), Some("docs"));
        assert_eq!(table_name_of_entry("docs.lance/"), Some("docs"));
        assert_eq!(table_name_of_entry("docs"), None);
        assert_eq!(table_name_of_entry(".lance"), None);
        assert_eq!(table_name_of_entry("bad name.lance"), None);
    }
}
