//! The GPU -> NIC assignment: which NIC(s) each GPU of a job should use.
//!
//! Each GPU gets a NIC at its best path class. When several GPUs compete for the same closest
//! NICs, they are spread so every NIC serves as few GPUs as possible, preferring active ports,
//! then faster links, then names in order. NICs left over afterwards (two NICs per GPU on some
//! machines, or a job granted fewer GPUs than the node has) become extra rails of the
//! GPUs they are closest to.

use crate::model::natural_key;
use crate::model::Topology;
use crate::path::{Device, PathClass};

/// The NICs one GPU uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// GPU index.
    pub gpu: u32,
    /// Positions in [`Topology::nics`], the primary first; empty when the node has no NIC.
    pub nics: Vec<usize>,
    /// The path class between the GPU and its NICs (`None` without NICs).
    pub path: Option<PathClass>,
}

/// A GPU subset that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// A GPU index that this node does not have.
    #[error("GPU {index} does not exist ({})", available_text(*.count))]
    UnknownGpu {
        /// The index asked for.
        index: u32,
        /// How many GPUs the node has.
        count: usize,
    },
    /// The same GPU asked for twice.
    #[error("GPU {0} is listed twice")]
    Duplicate(u32),
}

fn available_text(count: usize) -> String {
    match count {
        0 => "this node has no GPU".to_owned(),
        1 => "this node has GPU 0 only".to_owned(),
        n => format!("this node has GPUs 0-{}", n - 1),
    }
}

impl Topology {
    /// Assigns NICs to the given GPUs (all GPUs when `None`), in the order given.
    pub fn assign_nics(&self, gpus: Option<&[u32]>) -> Result<Vec<Assignment>, AssignError> {
        let wanted: Vec<u32> = match gpus {
            Some(list) => list.to_vec(),
            None => self.gpus.iter().map(|gpu| gpu.index).collect(),
        };
        let mut positions = Vec::with_capacity(wanted.len());
        for (n, &index) in wanted.iter().enumerate() {
            if wanted[..n].contains(&index) {
                return Err(AssignError::Duplicate(index));
            }
            let position = self.gpus.iter().position(|gpu| gpu.index == index).ok_or(
                AssignError::UnknownGpu {
                    index,
                    count: self.gpus.len(),
                },
            )?;
            positions.push(position);
        }
        // The closest NICs of each GPU.
        let candidates: Vec<(Option<PathClass>, Vec<usize>)> = positions
            .iter()
            .map(|&gpu| {
                let classes: Vec<PathClass> = (0..self.nics.len())
                    .map(|nic| self.path_class(Device::Gpu(gpu), Device::Nic(nic)))
                    .collect();
                let best = classes.iter().min().copied();
                let nics = (0..self.nics.len())
                    .filter(|&nic| Some(classes[nic]) == best)
                    .collect();
                (best, nics)
            })
            .collect();
        // Active ports first, then faster links, then names in order.
        let prefer = |a: usize, b: usize| {
            let (a, b) = (&self.nics[a], &self.nics[b]);
            a.is_down()
                .cmp(&b.is_down())
                .then_with(|| {
                    let rate = |nic: &crate::model::Nic| nic.best_rate_gbps().unwrap_or(0.0);
                    rate(b).total_cmp(&rate(a))
                })
                .then_with(|| natural_key(&a.name).cmp(&natural_key(&b.name)))
        };
        let mut load = vec![0usize; self.nics.len()];
        let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); positions.len()];
        for (slot, (_, nics)) in candidates.iter().enumerate() {
            let best = nics
                .iter()
                .copied()
                .min_by(|&a, &b| load[a].cmp(&load[b]).then_with(|| prefer(a, b)));
            if let Some(best) = best {
                load[best] += 1;
                chosen[slot].push(best);
            }
        }
        // Unused NICs become rails of the GPUs that have them among their closest, those with
        // the fewest rails first.
        // A NIC whose ports are all down is no use as an extra rail.
        let mut spare: Vec<usize> = (0..self.nics.len())
            .filter(|&nic| load[nic] == 0 && !self.nics[nic].is_down())
            .collect();
        spare.sort_by(|&a, &b| prefer(a, b));
        for nic in spare {
            let taker = (0..positions.len())
                .filter(|&slot| candidates[slot].1.contains(&nic))
                .min_by_key(|&slot| (chosen[slot].len(), slot));
            if let Some(slot) = taker {
                chosen[slot].push(nic);
            }
        }
        Ok(wanted
            .iter()
            .zip(candidates)
            .zip(chosen)
            .map(|((&gpu, (path, _)), nics)| Assignment { gpu, nics, path })
            .collect())
    }
}
