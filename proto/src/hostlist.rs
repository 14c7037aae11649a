//! Slurm's host lists (`node[01-03,7],login1`), as `SLURM_STEP_NODELIST` gives a step's nodes
//! and as users write them (`cohort top --nodes`).

/// Expands a Slurm host list (`node[01-03,7],login1`) in order.
pub fn expand(list: &str) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        // One item: up to a comma outside brackets.
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                ',' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let item = &rest[..end];
        rest = rest[end..].trim_start_matches(',');
        match item.split_once('[') {
            None => hosts.push(item.to_owned()),
            Some((prefix, ranges)) => {
                let Some((ranges, suffix)) = ranges.split_once(']') else {
                    return Err(format!("host list {list:?}: unclosed bracket"));
                };
                for range in ranges.split(',') {
                    let (low, high) = range.split_once('-').unwrap_or((range, range));
                    let width = low.len();
                    let bad = || format!("host list {list:?}: bad range {range:?}");
                    let low_n: u64 = low.parse().map_err(|_| bad())?;
                    let high_n: u64 = high.parse().map_err(|_| bad())?;
                    if low_n > high_n || high_n - low_n > 100_000 {
                        return Err(bad());
                    }
                    for n in low_n..=high_n {
                        hosts.push(format!("{prefix}{n:0width$}{suffix}"));
                    }
                }
            }
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_expand_in_order() {
        assert_eq!(
            expand("node[01-03],login1").unwrap(),
            ["node01", "node02", "node03", "login1"]
        );
        assert_eq!(expand("a[1,3-4]b").unwrap(), ["a1b", "a3b", "a4b"]);
        assert_eq!(expand("single").unwrap(), ["single"]);
        assert!(expand("n[1-").is_err());
        assert!(expand("n[3-1]").is_err());
    }
}
