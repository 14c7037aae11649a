//! Loading a topology file whose format is told from its content: hwloc XML or NCCL XML.
//!
//! Every file is first checked as XML, so a malformed one is reported with its line and
//! column whichever format it claims to be; then the root element decides the importer.

use std::path::Path;

use crate::model::Topology;

/// The formats a topology file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// hwloc's XML (`lstopo --of xml`), root element `<topology>`.
    HwlocXml,
    /// NCCL's topology XML (`NCCL_TOPO_FILE`), root element `<system>`.
    NcclXml,
}

/// Why a topology file could not be loaded. Each message names the file and, where the
/// parser knows it, the line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{path}: not a text file (invalid UTF-8 at byte {offset})")]
    NotText {
        /// The file.
        path: String,
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The file is empty.
    #[error("{path}: empty file")]
    Empty {
        /// The file.
        path: String,
    },
    /// The content is not well-formed XML (truncated, mismatched tags, bad characters).
    #[error("{path}:{line}:{column}: malformed XML: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
        /// The XML parser's message.
        message: String,
    },
    /// Well-formed XML that is neither topology format.
    #[error("{path}: neither an hwloc nor an NCCL topology file (root element <{root}>, expected <topology> or <system>)")]
    UnknownFormat {
        /// The file.
        path: String,
        /// The root element found.
        root: String,
    },
    /// An hwloc XML version the linked hwloc cannot read.
    #[error("{path}: hwloc XML version {version} is not supported by the hwloc library in use (it reads versions 1.x and 2.x); export with hwloc 2 or `lstopo --of xml` from a 2.x release")]
    HwlocVersion {
        /// The file.
        path: String,
        /// The version attribute found.
        version: String,
    },
    /// An hwloc file with an object that lacks a set hwloc needs (hwloc 2.9 would crash).
    #[error("{path}:{line}: this <object> has no {attribute} attribute; the file is not a complete hwloc export")]
    HwlocIncomplete {
        /// The file.
        path: String,
        /// Line of the object.
        line: u32,
        /// The missing attribute.
        attribute: &'static str,
    },
    /// hwloc refused the content.
    #[error("{path}: {source}")]
    Hwloc {
        /// The file.
        path: String,
        /// hwloc's complaint.
        source: crate::hwloc::HwlocError,
    },
    /// The NCCL importer found a problem.
    #[error("{path}:{}: {}", source.line, source.message)]
    Nccl {
        /// The file.
        path: String,
        /// The problem and its line.
        source: crate::nccl::NcclImportError,
    },
}

impl Topology {
    /// Loads a topology file (hwloc or NCCL XML, told apart by content).
    pub fn from_file(path: &Path) -> Result<Topology, LoadError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: name.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| LoadError::NotText {
            path: name.clone(),
            offset: e.utf8_error().valid_up_to(),
        })?;
        Topology::from_xml_str(&text, &name)
    }

    /// Loads topology XML from memory; `origin` names it in errors and in the sources list.
    pub fn from_xml_str(text: &str, origin: &str) -> Result<Topology, LoadError> {
        let path = origin.to_owned();
        if text.trim().is_empty() {
            return Err(LoadError::Empty { path });
        }
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(text, options).map_err(|e| {
            let pos = e.pos();
            LoadError::Malformed {
                path: path.clone(),
                line: pos.row,
                column: pos.col,
                message: e.to_string(),
            }
        })?;
        let root = doc.root_element();
        match detect(&doc) {
            Some(FileFormat::HwlocXml) => {
                let version = root.attribute("version").unwrap_or("1.0");
                if !(version.starts_with("1.") || version.starts_with("2.")) {
                    return Err(LoadError::HwlocVersion {
                        path,
                        version: version.to_owned(),
                    });
                }
                check_hwloc_sets(&doc, &path)?;
                crate::hwloc::load_xml(text, origin)
                    .map_err(|source| LoadError::Hwloc { path, source })
            }
            Some(FileFormat::NcclXml) => {
                crate::nccl::import(&doc, origin).map_err(|source| LoadError::Nccl { path, source })
            }
            None => Err(LoadError::UnknownFormat {
                path,
                root: root.tag_name().name().to_owned(),
            }),
        }
    }
}

/// hwloc 2.9 dereferences a null set when an object of an XML file has a `cpuset` without a
/// `complete_cpuset` (or the same for node sets), or when the root object lacks them (it
/// segfaults, as `lstopo -i` does on such a file). Every hwloc export writes them, so a file
/// without them is refused before hwloc sees it.
fn check_hwloc_sets(doc: &roxmltree::Document<'_>, path: &str) -> Result<(), LoadError> {
    let incomplete =
        |node: roxmltree::Node<'_, '_>, attribute: &'static str| LoadError::HwlocIncomplete {
            path: path.to_owned(),
            line: doc.text_pos_at(node.range().start).row,
            attribute,
        };
    let root = doc
        .root_element()
        .children()
        .find(|node| node.has_tag_name("object"));
    if let Some(root) = root {
        for attribute in ["cpuset", "complete_cpuset", "nodeset", "complete_nodeset"] {
            if root.attribute(attribute).is_none() {
                return Err(incomplete(root, attribute));
            }
        }
    }
    for object in doc.descendants().filter(|node| node.has_tag_name("object")) {
        if object.attribute("cpuset").is_some() && object.attribute("complete_cpuset").is_none() {
            return Err(incomplete(object, "complete_cpuset"));
        }
        if object.attribute("nodeset").is_some() && object.attribute("complete_nodeset").is_none() {
            return Err(incomplete(object, "complete_nodeset"));
        }
    }
    Ok(())
}

fn detect(doc: &roxmltree::Document<'_>) -> Option<FileFormat> {
    match doc.root_element().tag_name().name() {
        "topology" => Some(FileFormat::HwlocXml),
        "system" => Some(FileFormat::NcclXml),
        _ => None,
    }
}
