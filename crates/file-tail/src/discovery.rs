//! Which paths a source reads: `include` globs (with `**`) minus `exclude` globs.

use std::path::{Path, PathBuf};

/// A source's globs, compiled.
#[derive(Debug, Clone)]
pub struct Globs {
    include: Vec<String>,
    patterns: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
}

const MATCH: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

impl Globs {
    /// Compiles the patterns; the error names the first bad one.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, String> {
        let patterns = include
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| format!("include pattern `{p}`: {e}")))
            .collect::<Result<_, _>>()?;
        let exclude = exclude
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| format!("exclude pattern `{p}`: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { include: include.to_vec(), patterns, exclude })
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|p| p.matches_path_with(path, MATCH))
    }

    /// Whether `path` is one of this source's files.
    pub fn matches(&self, path: &Path) -> bool {
        self.patterns.iter().any(|p| p.matches_path_with(path, MATCH)) && !self.is_excluded(path)
    }

    /// Every regular file matching now, sorted, without duplicates.
    pub fn discover(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for pattern in &self.include {
            let Ok(paths) = glob::glob_with(pattern, MATCH) else { continue };
            out.extend(paths.flatten().filter(|p| !self.is_excluded(p) && p.is_file()));
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_star_and_exclusions() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = tmp.path();
        for p in ["a.log", "b.txt", "x/y/c.log", "x/skip.log"] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap_or(root)).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&path, "l\n").unwrap_or_else(|e| panic!("{e}"));
        }
        let globs = Globs::new(&[format!("{}/**/*.log", root.display())], &[format!("{}/x/skip.log", root.display())])
            .unwrap_or_else(|e| panic!("{e}"));
        let found: Vec<String> =
            globs.discover().iter().map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string()).collect();
        assert_eq!(found, vec!["a.log", "x/y/c.log"]);
        assert!(globs.matches(&root.join("x/y/c.log")));
        assert!(!globs.matches(&root.join("x/skip.log")));
        assert!(Globs::new(&["[".to_owned()], &[]).is_err());
    }
}
