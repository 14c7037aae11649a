//! Sets of CPU (or NUMA node) indices, in the spellings Linux and NCCL use.
//!
//! A [`CpuList`] prints as a Linux list (`0-15,32-47`) and parses that form and the hexadecimal
//! masks of `/sys/.../local_cpus` and NCCL's `affinity` attribute (`0000ffff,ffffffff`).

use std::fmt;

/// A sorted set of CPU indices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuList(Vec<u32>);

/// A CPU mask or list that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CPU mask or list")]
pub struct CpuListParseError(pub String);

impl CpuList {
    /// A set from any indices (sorted and deduplicated here).
    pub fn from_indices(indices: impl IntoIterator<Item = u32>) -> CpuList {
        let mut cpus: Vec<u32> = indices.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        CpuList(cpus)
    }

    /// The indices in ascending order.
    pub fn indices(&self) -> &[u32] {
        &self.0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The union of two sets.
    pub fn union(&self, other: &CpuList) -> CpuList {
        CpuList::from_indices(self.0.iter().chain(other.0.iter()).copied())
    }

    /// Parses a hexadecimal mask of comma-separated 32-bit words, most significant first, as
    /// Linux and NCCL write them (`ffffffff,0000ffff`), with or without `0x` before each word.
    /// Empty words (hwloc writes `0x000000fc,,0x00fc0000`) are zero.
    pub fn parse_mask(text: &str) -> Result<CpuList, CpuListParseError> {
        let bad = || CpuListParseError(text.to_owned());
        let text = text.trim();
        if text.is_empty() {
            return Err(bad());
        }
        let words: Vec<&str> = text.split(',').collect();
        let mut cpus = Vec::new();
        for (position, word) in words.iter().rev().enumerate() {
            let word = word.trim();
            let word = word
                .strip_prefix("0x")
                .or_else(|| word.strip_prefix("0X"))
                .unwrap_or(word);
            if word.len() > 8 {
                return Err(bad());
            }
            let value = if word.is_empty() {
                0
            } else {
                u32::from_str_radix(word, 16).map_err(|_| bad())?
            };
            let base = u32::try_from(position)
                .ok()
                .and_then(|p| p.checked_mul(32))
                .ok_or_else(bad)?;
            for bit in 0..32 {
                if value & (1 << bit) != 0 {
                    cpus.push(base + bit);
                }
            }
        }
        Ok(CpuList::from_indices(cpus))
    }

    /// Parses a Linux list (`0-3,8,10-11`).
    pub fn parse_list(text: &str) -> Result<CpuList, CpuListParseError> {
        let bad = || CpuListParseError(text.to_owned());
        let text = text.trim();
        let mut cpus = Vec::new();
        if text.is_empty() {
            return Ok(CpuList::default());
        }
        for part in text.split(',') {
            let (start, end) = match part.split_once('-') {
                Some((start, end)) => (start, end),
                None => (part, part),
            };
            let start: u32 = start.trim().parse().map_err(|_| bad())?;
            let end: u32 = end.trim().parse().map_err(|_| bad())?;
            if start > end || end - start > 1 << 20 {
                return Err(bad());
            }
            cpus.extend(start..=end);
        }
        Ok(CpuList::from_indices(cpus))
    }

    /// Formats as a hexadecimal mask of 32-bit words, most significant first (NCCL's form).
    pub fn to_mask(&self) -> String {
        let n_words = self.0.last().map_or(1, |&last| last / 32 + 1);
        let mut words = vec![0u32; n_words as usize];
        for &cpu in &self.0 {
            words[(cpu / 32) as usize] |= 1 << (cpu % 32);
        }
        words
            .iter()
            .rev()
            .map(|word| format!("{word:08x}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_lists_round_trip() {
        let cpus = CpuList::parse_mask("00000000,0000ffff,ffffffff").unwrap();
        assert_eq!(cpus.to_string(), "0-47");
        assert_eq!(cpus.to_mask(), "0000ffff,ffffffff");
        let hwloc = CpuList::parse_mask("0x000000fc,,0x00fc0000").unwrap();
        assert_eq!(hwloc.to_string(), "18-23,66-71");
        assert_eq!(
            CpuList::parse_list("0-3,8,10-11").unwrap().to_string(),
            "0-3,8,10-11"
        );
        assert_eq!(CpuList::parse_list("").unwrap(), CpuList::default());
        assert!(CpuList::parse_mask("zz").is_err());
        assert!(CpuList::parse_mask("123456789").is_err());
        assert!(CpuList::parse_list("3-1").is_err());
    }
}
