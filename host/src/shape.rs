//! What a component is made of, read from its bytes without compiling or
//! running any of it: the interfaces it imports and exports, and how many
//! core instances, memories and tables it would create.
//!
//! Invariant: nothing here compiles or executes code, so it is safe on a
//! component whose signer is not trusted (`garden inspect`), and it runs
//! before the compiler sees a component at load. The counts are of what
//! the component declares; wasmtime's pooling limits and the store limiter
//! enforce the same ceilings at instantiation, so a component that hides
//! instances (a nested component instantiated twice) still cannot pass them.

use wasmparser::{Instance, Parser, Payload};

/// The shape of one component.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    /// Imported names at the top level (e.g. `wasi:io/poll@0.2.6`).
    pub imports: Vec<String>,
    /// Exported names at the top level.
    pub exports: Vec<String>,
    /// Core module instantiations anywhere inside the component.
    pub core_instances: u32,
    /// Linear memories defined by its core modules.
    pub memories: u32,
    /// Tables defined by its core modules.
    pub tables: u32,
    /// Bytes of linear memory its core modules' memories start with,
    /// together: what an instance holds before it runs a line.
    pub initial_memory_bytes: u64,
}

/// Why a component's shape could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the component's structure: {0}")]
pub struct ShapeError(String);

/// Reads the shape of a component (its bytes as built, without a signature
/// section or with one: custom sections are ignored).
pub fn of(bytes: &[u8]) -> Result<Shape, ShapeError> {
    let mut shape = Shape::default();
    // Depth of nesting: 0 is the outer component, whose imports and
    // exports are the ones a host links against.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| ShapeError(e.to_string()))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| ShapeError(e.to_string()))?;
                    shape.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| ShapeError(e.to_string()))?;
                    shape.exports.push(export.name.name.to_string());
                }
            }
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    let instance = instance.map_err(|e| ShapeError(e.to_string()))?;
                    if matches!(instance, Instance::Instantiate { .. }) {
                        shape.core_instances = shape.core_instances.saturating_add(1);
                    }
                }
            }
            Payload::MemorySection(reader) => {
                shape.memories = shape.memories.saturating_add(reader.count());
                for memory in reader {
                    let memory = memory.map_err(|e| ShapeError(e.to_string()))?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(WASM_PAGE_LOG2);
                    shape.initial_memory_bytes = shape
                        .initial_memory_bytes
                        .saturating_add(memory.initial.saturating_mul(page));
                }
            }
            Payload::TableSection(reader) => {
                shape.tables = shape.tables.saturating_add(reader.count());
            }
            _ => {}
        }
    }
    Ok(shape)
}

/// A Wasm page is 64 KiB unless a memory says otherwise.
const WASM_PAGE_LOG2: u32 = 16;

/// An interface name without its `@version`: `wasi:io/poll@0.2.6` gives
/// `wasi:io/poll`.
pub fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(bare, _)| bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component of `n` core modules, each with a 1-page memory and a
    /// table, each instantiated once.
    fn many(n: usize) -> Vec<u8> {
        let mut wat = String::from("(component\n");
        for i in 0..n {
            wat.push_str(&format!(
                "  (core module $m{i} (memory 1) (table 1 funcref))\n  (core instance (instantiate $m{i}))\n"
            ));
        }
        wat.push(')');
        wat::parse_str(&wat).expect("valid WAT")
    }

    #[test]
    fn counts_instances_memories_and_tables_at_every_depth() {
        let shape = of(&many(12)).expect("readable");
        assert_eq!(
            (shape.core_instances, shape.memories, shape.tables),
            (12, 12, 12)
        );
        assert_eq!(shape.initial_memory_bytes, 12 * 65_536);
        assert!(shape.imports.is_empty() && shape.exports.is_empty());
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        assert!(of(b"\0asm\x0d\0\x01\0\xff\xff\xff").is_err());
        assert_eq!(unversioned("wasi:io/poll@0.2.6"), "wasi:io/poll");
        assert_eq!(unversioned("plain"), "plain");
    }
}
