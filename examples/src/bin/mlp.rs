//! Data-parallel training of a small MLP with libtorch (tch) and Cohort's collectives.
//!
//! Every rank builds the same model (rank 0's initial parameters are broadcast), trains on its
//! own shard of a synthetic four-class data set, and averages gradients with `GradSync` after
//! each backward pass. Rank 0 prints the loss averaged over all ranks after every epoch. At the
//! end the program checks that the loss fell and that every rank holds bit-identical
//! parameters, and exits non-zero otherwise.
//!
//! Under a search it takes `lr` and `hidden` from `COHORT_HPARAMS`, trains until the epoch
//! `COHORT_SEARCH_UNTIL`, resumes from its trial's latest checkpoint and checkpoints at the end.
//!
//! Run: `cohort run -n 4 -- target/release/mlp [EPOCHS]`; searched: `cohort search start
//! examples/search/mlp.toml --local 2`.

#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use cohort_collectives::torch::{GradSync, DEFAULT_BUCKET_BYTES};
use cohort_collectives::{Communicator, ReduceOp};
use cohort_proto::env as vars;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const FEATURES: i64 = 16;
const CLASSES: i64 = 4;
const SAMPLES: i64 = 8192;
const BATCH: i64 = 64;

/// A synthetic classification set: four Gaussian blobs, the same on every rank.
fn dataset() -> (Tensor, Tensor) {
    tch::manual_seed(42);
    let centers = Tensor::randn([CLASSES, FEATURES], (Kind::Float, Device::Cpu)) * 2.0;
    let labels = Tensor::randint(CLASSES, [SAMPLES], (Kind::Int64, Device::Cpu));
    let noise = Tensor::randn([SAMPLES, FEATURES], (Kind::Float, Device::Cpu));
    (centers.index_select(0, &labels) + noise, labels)
}

/// FNV-1a over the parameters' bytes, in a fixed order.
fn fingerprint(vs: &nn::VarStore) -> Result<i64> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut named = vs.variables().into_iter().collect::<Vec<_>>();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, tensor) in named {
        let numel = tensor.numel();
        let mut values = vec![0f32; numel];
        tensor.f_copy_data(&mut values, numel)?;
        for value in values {
            for byte in value.to_bits().to_le_bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    Ok(i64::from_le_bytes(hash.to_le_bytes()))
}

/// A hyperparameter from `COHORT_HPARAMS` (set by a search), or its default.
fn hparam(name: &str, default: f64) -> Result<f64> {
    let Ok(text) = std::env::var(vars::HPARAMS) else {
        return Ok(default);
    };
    let values: serde_json::Value =
        serde_json::from_str(&text).context("COHORT_HPARAMS is not JSON")?;
    Ok(values
        .get(name)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(default))
}

fn main() -> Result<()> {
    let searched = std::env::var(vars::SEARCH_UNTIL).ok();
    let epochs: usize = match (&searched, std::env::args().nth(1)) {
        (Some(until), _) => until
            .parse()
            .with_context(|| format!("COHORT_SEARCH_UNTIL: {until:?} is not a number"))?,
        (None, Some(text)) => text
            .parse()
            .with_context(|| format!("EPOCHS: {text:?} is not a number"))?,
        (None, None) => 5,
    };
    // Ranks share the cores of one machine under `cohort run`: one thread each.
    tch::set_num_threads(1);
    let comm = std::sync::Arc::new(
        Communicator::from_env().context("joining the job (run me with `cohort run`)")?,
    );
    let (rank, size) = (i64::from(comm.rank()), i64::from(comm.size()));

    #[allow(clippy::cast_possible_truncation)]
    let hidden = hparam("hidden", 64.0)?.round().max(1.0) as i64;
    let lr = hparam("lr", 0.05)?;
    tch::manual_seed(rank);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(
            &root / "hidden",
            FEATURES,
            hidden,
            Default::default(),
        ))
        .add_fn(|x| x.relu())
        .add(nn::linear(
            &root / "out",
            hidden,
            CLASSES,
            Default::default(),
        ));
    // Under `cohort run` or the Slurm plugin this records into the run's trial; rank 0 writes.
    let tracker = cohort_catalog::Tracker::from_env()?;
    // The ranks agree on when to stop: the search's length or stop request, or Slurm's
    // warning (its stop signal ahead of the time limit, SIGTERM at a preemption), may reach
    // them at different epochs; any rank that sees one stops them all after the same epoch.
    let agree = std::sync::Arc::clone(&comm);
    tracker.agree_through(move |mine| {
        let mut code = [mine];
        agree
            .allreduce(&mut code, ReduceOp::Max)
            .map_err(|e| e.to_string())?;
        Ok(code[0])
    });
    // A restarted or promoted trial continues from its latest checkpoint (rank 0 loads it;
    // the broadcast below gives it to every rank).
    let mut first_epoch = [0i64];
    if let Some(checkpoint) = tracker.latest_checkpoint()? {
        vs.load(&checkpoint.path)
            .with_context(|| format!("loading the checkpoint {}", checkpoint.path))?;
        first_epoch[0] = checkpoint.step;
        println!(
            "resumed from {} (epoch {})",
            checkpoint.path, checkpoint.step
        );
    }
    comm.allreduce(&mut first_epoch, ReduceOp::Max)?;
    let first_epoch = usize::try_from(first_epoch[0])?;
    // Seeds differ per rank on purpose: the broadcast is what makes the models identical.
    for mut tensor in vs.trainable_variables() {
        tch::no_grad(|| comm.broadcast_tensor(&mut tensor, 0))?;
    }
    let mut optimizer = nn::Sgd::default().build(&vs, lr)?;
    tracker.log_hparams(
        [
            ("lr".to_owned(), lr.into()),
            ("hidden".to_owned(), hidden.into()),
            ("epochs".to_owned(), epochs.into()),
            ("ranks".to_owned(), size.into()),
        ]
        .into(),
    )?;
    let sync = GradSync::new(DEFAULT_BUCKET_BYTES);

    let (inputs, labels) = dataset();
    let shard = SAMPLES / size;
    let inputs = inputs.narrow(0, rank * shard, shard);
    let labels = labels.narrow(0, rank * shard, shard);
    let params = vs.trainable_variables();

    let mut losses = Vec::new();
    for epoch in first_epoch..epochs {
        let mut total = 0.0f64;
        let mut batches = 0.0f64;
        for start in (0..=shard - BATCH).step_by(usize::try_from(BATCH)?) {
            let x = inputs.narrow(0, start, BATCH);
            let y = labels.narrow(0, start, BATCH);
            optimizer.zero_grad();
            let loss = net.forward(&x).cross_entropy_for_logits(&y);
            loss.backward();
            sync.sync(&comm, &params)?;
            optimizer.step();
            total += loss.double_value(&[]);
            batches += 1.0;
        }
        let correct = tch::no_grad(|| {
            net.forward(&inputs)
                .argmax(-1, false)
                .eq_tensor(&labels)
                .to_kind(tch::Kind::Float)
                .mean(tch::Kind::Float)
                .double_value(&[])
        });
        let mut mean = [total / batches, correct];
        comm.allreduce(&mut mean, ReduceOp::Avg)?;
        if rank == 0 {
            println!("epoch {epoch}: loss {:.4} accuracy {:.3}", mean[0], mean[1]);
        }
        // Step N is the state after N epochs, as checkpoints count them.
        let step = i64::try_from(epoch + 1)?;
        tracker.log_metrics(step, &[("loss", mean[0]), ("accuracy", mean[1])])?;
        losses.push(mean[0]);
        if tracker.should_stop(step)? {
            break;
        }
    }

    let mine = fingerprint(&vs)?;
    let mut all = vec![0i64; usize::try_from(size)?];
    comm.allgather(&[mine], &mut all)?;
    if all.iter().any(|&other| other != mine) {
        bail!("parameters differ between ranks: fingerprints {all:x?}");
    }
    if let Some(trial) = tracker.trial() {
        let done = first_epoch + losses.len();
        let path = trial.dir.join(format!("checkpoint-{done}.ot"));
        vs.save(&path)?;
        tracker.checkpoint(&path, i64::try_from(done)?, Default::default())?;
    }
    let status = tracker.exit_status();
    tracker.finish(cohort_proto::catalog::TrialState::Completed)?;
    if status != 0 {
        // Stopped at Slurm's warning, checkpointed: the status tells the Slurm plugin, which
        // records the trial as preempted (and requeues the job with --cohort-requeue).
        println!(
            "stopped after epoch {} at a warning from Slurm",
            first_epoch + losses.len()
        );
        std::process::exit(status);
    }
    let (first, last) = (losses.first().copied(), losses.last().copied());
    if let (Some(first), Some(last)) = (first, last) {
        if searched.is_none() && losses.len() > 1 && last >= first {
            bail!("the loss did not fall: {first:.4} -> {last:.4}");
        }
        if rank == 0 {
            println!(
                "loss fell from {first:.4} to {last:.4}; parameters are bit-identical on all {size} ranks (fingerprint {mine:016x})"
            );
        }
    }
    Ok(())
}
